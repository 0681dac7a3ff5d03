"""A conformance kit for detector-family plugins (detectors.base.Family).

    from detectors.testkit import check_family
    problems = check_family(MyFamily, {0: {...}, 3: {...}}, n_tags=5)
    assert problems == []

It feeds the family random streams (with NaN, BAD and COMM_FAIL samples, equal timestamps and
gaps) and checks what the engine relies on: ``check`` accepts the parameters, ``update``
returns ConditionChange objects for watched tags only, with the family's ``kind``, in time
order; an alarm is never raised twice in a row at the same level nor cleared when it is not
active; the same stream gives the same changes whether it arrives in one batch or sample by
sample (the agent polls, replay sends big batches); and two instances agree (no hidden
global state).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from detectors.base import BAD, COMM_FAIL, GOOD, ConditionChange, Family


def stream(n_tags: int, n_ticks: int, seed: int = 0, t0: float = 1.8e9) -> tuple[np.ndarray, ...]:
    """A time-major stream over ``n_tags``: random walks with steps, NaN, BAD/COMM_FAIL
    samples, equal timestamps and a few long gaps."""
    rng = np.random.default_rng(seed)
    steps = rng.normal(0, 1, (n_ticks, n_tags)) + np.where(rng.random((n_ticks, n_tags)) < 0.02, 25.0, 0.0)
    values = np.cumsum(steps, axis=0)
    values[rng.random(values.shape) < 0.02] = np.nan
    quality = np.full(values.shape, GOOD, dtype=np.uint8)
    quality[rng.random(values.shape) < 0.02] = BAD
    quality[rng.random(values.shape) < 0.01] = COMM_FAIL
    dt = rng.choice([0.0, 1.0, 1.0, 1.0, 60.0], size=n_ticks, p=[0.1, 0.3, 0.3, 0.28, 0.02])
    ticks = t0 + np.cumsum(dt)
    tag = np.tile(np.arange(n_tags, dtype=np.int32), n_ticks)
    ts = np.repeat(ticks, n_tags)
    return tag, values.ravel().astype(np.float64), ts.astype(np.float64), quality.ravel()


def _key(c: ConditionChange) -> tuple:
    return (c.tag, c.kind, c.level, c.active, round(c.ts, 6))


def check_family(cls: type[Family], params: Mapping[int, Mapping[str, Any]], n_tags: int,
                 n_ticks: int = 2000, seed: int = 0) -> list[str]:
    out: list[str] = []
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        return [f"{cls!r} is not a detectors.base.Family subclass"]
    if not cls.name:
        out.append("the family has no name (it is the alarm kind)")
    for t, p in params.items():
        out += [f"check() rejects the parameters of tag {t}: {k}: {m}" for k, m in cls.check(p)]
    if out:
        return out
    tag, value, ts, quality = stream(n_tags, n_ticks, seed)
    whole = cls(n_tags, params).update(tag, value, ts, quality)
    if not isinstance(whole, list) or not all(isinstance(c, ConditionChange) for c in whole):
        return ["update() must return a list of ConditionChange"]
    watched = set(params)
    for c in whole:
        if c.tag not in watched:
            out.append(f"a change for tag {c.tag}, which the family does not watch")
            break
        if c.kind != cls.name:
            out.append(f"a change of kind {c.kind!r}, not the family's name {cls.name!r}")
            break
    if any(b.ts < a.ts for a, b in zip(whole, whole[1:], strict=False) if a.tag == b.tag):
        out.append("changes of one tag are not in time order")
    state: dict[int, str | None] = {}
    for c in whole:
        before = state.get(c.tag)
        if c.active and before == c.level:
            out.append(f"tag {c.tag} raised again at level {c.level} without a change")
            break
        if not c.active and before is None:
            out.append(f"tag {c.tag} cleared while not active")
            break
        state[c.tag] = c.level if c.active else None
    fam = cls(n_tags, params)
    one_by_one: list[ConditionChange] = []
    n = len(tag)
    for i in range(0, n, n_tags):  # one poll (all tags at one time) per call, like the agent
        sl = slice(i, min(n, i + n_tags))
        one_by_one += fam.update(tag[sl].copy(), value[sl].copy(), ts[sl].copy(), quality[sl].copy())
    if sorted(map(_key, one_by_one)) != sorted(map(_key, whole)):
        out.append(f"one big batch gave {len(whole)} changes, the same samples poll by poll gave {len(one_by_one)}")
    again = cls(n_tags, params).update(tag, value, ts, quality)
    if list(map(_key, again)) != list(map(_key, whole)):
        out.append("two instances fed the same stream disagree (hidden shared state?)")
    return out
