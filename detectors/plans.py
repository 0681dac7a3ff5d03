"""Which batches' tick structure a kernel family may keep: the whole-tick plans of frozen tag arrays.

A kernel with a whole-tick path (``detectors._kernels``) works out from a batch's tag array
whether the batch is whole ticks of a run of its slots, a pure function of the array's
contents (``kernel.plan(tags)``), and judges a batch with a plan it is given
(``kernel.update(..., plan)``) without looking at the tags again. The policy of when a plan may
be reused lives here: only for an array whose contents can never change. A driver passes its
device's tags as one such array at every read (``drivers.base.frozen_tags``), so its plan is
worked out once; any other array is checked by the kernel at every batch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

#: frozen tag arrays whose plan a family keeps (one per device read plan and batch shape)
MAX_PLANS = 64


def frozen(tags: Any) -> bool:
    """True for an ndarray whose contents can never change: read-only, and its memory an
    immutable bytes object (numpy refuses to make such an array, or any view of it, writeable)."""
    if type(tags) is not np.ndarray or tags.flags.writeable:
        return False
    base = tags.base
    while type(base) is np.ndarray:
        base = base.base
    return type(base) is bytes


class Plans(dict[int, tuple[np.ndarray, Any]]):
    """One family's plans: id(tag array) -> (the array, its plan), at most MAX_PLANS (all dropped
    when full, as a plant's read plans are few and fixed). The reference to the array keeps its
    id naming it for as long as its plan is kept. A caller may look an array up itself
    (``known = plans.get(id(tag))``, valid when ``known[0] is tag``) before calling ``plan``."""

    def plan(self, kernel: Any, tag: np.ndarray) -> Any:
        """``kernel``'s plan for the int32 tag array ``tag`` when the array is frozen, worked
        out at its first batch; None for any other array (the kernel then checks its tags)."""
        known = self.get(id(tag))
        if known is not None and known[0] is tag:
            return known[1]
        if not frozen(tag):
            return None
        if len(self) >= MAX_PLANS:
            self.clear()
        plan = kernel.plan(tag)
        self[id(tag)] = (tag, plan)
        return plan
