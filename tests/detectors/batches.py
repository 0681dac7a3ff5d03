"""Test helper: one tag's samples as the batch arrays a family's ``update`` takes."""

from __future__ import annotations

import numpy as np


def feed(fam, values, ts=None, quality=None, tag=0):
    """Feed ``values`` of one tag (times 0, 1, 2, ... unless given, GOOD unless given)."""
    values = np.asarray(values, dtype=np.float64)
    n = len(values)
    ts = np.arange(n, dtype=np.float64) if ts is None else np.asarray(ts, dtype=np.float64)
    quality = np.zeros(n, dtype=np.uint8) if quality is None else np.asarray(quality, dtype=np.uint8)
    return fam.update(np.full(n, tag, dtype=np.int32), values, ts, quality)
