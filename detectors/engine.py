"""The engine: every configured detector family, each judging a whole batch in one call."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from detectors.base import ConditionChange, Family


class Engine:
    """Runs each family over a batch and returns the condition changes, in family order.

    Pure state machine driven by (samples, time): no clock, no I/O. The live agent and
    ``plantwatch replay`` call the same ``process``.
    """

    def __init__(self, n_tags: int, families: Sequence[Family]):
        self.n_tags = n_tags
        self.families = list(families)

    def process(
        self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray
    ) -> list[ConditionChange]:
        changes: list[ConditionChange] = []
        for family in self.families:
            changes.extend(family.update(tag, value, ts, quality))
        return changes
