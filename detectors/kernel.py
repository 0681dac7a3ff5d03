"""The base of the families whose state lives in one kernel object of ``detectors._kernels``:
slots for the watched tags, parameters packed per slot, and one kernel call per batch with the
read plan the family keeps for a device's frozen tag array."""

from __future__ import annotations

import math
from abc import abstractmethod
from collections.abc import Mapping
from typing import Any

import numpy as np

from detectors.base import ConditionChange, Family
from detectors.plans import Plans


def slot_map(n_tags: int, tags: list[int]) -> np.ndarray:
    """int32[n_tags] giving each watched tag its slot (position in ``tags``), -1 elsewhere."""
    slot = np.full(n_tags, -1, dtype=np.int32)
    for i, t in enumerate(tags):
        if not 0 <= t < n_tags:
            raise ValueError(f"tag index {t} outside 0..{n_tags - 1}")
        slot[t] = i
    return slot


def column(params: list[Mapping[str, Any]], key: str) -> np.ndarray:
    """One parameter across slots as float64; None (unset) becomes NaN."""
    return np.array([math.nan if p[key] is None else float(p[key]) for p in params], dtype=np.float64)


def as_batch(
    tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The batch as the contiguous typed arrays the kernels take (no copy when already so)."""
    return (
        np.ascontiguousarray(tag, dtype=np.int32),
        np.ascontiguousarray(value, dtype=np.float64),
        np.ascontiguousarray(ts, dtype=np.float64),
        np.ascontiguousarray(quality, dtype=np.uint8),
    )


class KernelFamily(Family):
    """A family whose state lives in one kernel object from ``detectors._kernels``."""

    kernel: Any

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        #: watched tag indices in slot order
        self.tags = sorted(self.params)
        self.slot_of_tag = slot_map(n_tags, self.tags)
        self._plans = Plans()

    def plan(self, tag: np.ndarray) -> Any:
        """The kernel's whole-tick plan for a batch's int32 tag array when the array is frozen
        (a device's read plan, passed at every read), kept from its first batch; else None."""
        return self._plans.plan(self.kernel, tag)

    def update(
        self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray
    ) -> list[ConditionChange]:
        tag, value, ts, quality = as_batch(tag, value, ts, quality)
        kernel, plan = self.kernel, None
        if kernel.whole_ticks:
            # Plans.plan's common case inline: at one tick per call the wrapper's cost is what counts
            known = self._plans.get(id(tag))
            plan = known[1] if known is not None and known[0] is tag else self._plans.plan(kernel, tag)
        events = kernel.update(tag, value, ts, quality, plan)
        if events is None:
            return []
        idx, prev, new, detail = events
        return [
            self.change(int(tag[i]), int(p), int(n), float(value[i]), float(ts[i]), float(x))
            for i, p, n, x in zip(idx.tolist(), prev.tolist(), new.tolist(), detail.tolist(), strict=True)
        ]

    @abstractmethod
    def change(self, tag: int, prev: int, new: int, value: float, ts: float, detail: float) -> ConditionChange:
        """Turn one kernel event (previous and new level codes, detail) into a ConditionChange."""
