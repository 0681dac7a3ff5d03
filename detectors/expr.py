"""Evaluation of computed tags: the opcodes and functions the expression compiler targets, and
the Evaluator that runs every compiled program over a batch in one kernel call
(``detectors._expr.ExprKernel``).

Knows nothing of the expression text: it takes programs (anything with ``out``, ``code``,
``windows``, ``inputs``, ``depth``, see agent.expressions.Program) and arrays. Semantics of one
tick, for each program whose inputs (directly or through other computed tags) had a sample:

- an input never sampled yet: the program writes nothing;
- an input BAD or COMM_FAIL: the value is NaN with the worst input quality;
- else the value computed, with quality UNCERTAIN if an input is; a NaN result (a window
  without enough samples, 0/0) writes nothing this tick, an infinite one (x/0) is BAD.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from detectors._expr import MAX_WINDOW_SAMPLES, OP_NAMES, ExprKernel

OPS = {name: i for i, name in enumerate(OP_NAMES)}
#: function name -> (fewest, most) arguments
FUNCTIONS = {"abs": (1, 1), "min": (1, 256), "max": (1, 256), "sum": (1, 256), "mean": (1, 256),
             "rate": (2, 2), "rolling_mean": (2, 2), "rolling_median": (2, 2), "rolling_max": (2, 2),
             "rolling_min": (2, 2)}
#: window function -> opcode; the second argument is the window in seconds
WINDOW_FUNCTIONS = {"rate": "RATE", "rolling_mean": "RMEAN", "rolling_median": "RMEDIAN", "rolling_max": "RMAX",
                    "rolling_min": "RMIN"}

__all__ = ["FUNCTIONS", "MAX_WINDOW_SAMPLES", "OPS", "WINDOW_FUNCTIONS", "Evaluator"]


def window_capacity(seconds: float, interval_s: float) -> int:
    """The samples a window starts room for: its span at the fastest input's interval, plus
    slack; it grows (doubling) up to MAX_WINDOW_SAMPLES when samples come faster."""
    if not interval_s > 0:
        return 64
    return int(min(MAX_WINDOW_SAMPLES, math.ceil(seconds / interval_s) + 2))


class Evaluator:
    """Every computed tag's program, evaluated in one kernel call per batch."""

    def __init__(self, n_tags: int, programs: Sequence[Any], intervals: Sequence[float] = ()):
        """``programs`` in dependency order (a program after those writing the tags it reads);
        ``intervals``: per program, the interval of its fastest input, sizing its windows."""
        self.programs = list(programs)
        self.outputs = np.array([p.out for p in self.programs], dtype=np.int32)
        ops, args, consts, start = [], [], [], [0]
        in_tag, in_start = [], [0]
        seconds, caps = [], []
        for i, p in enumerate(self.programs):
            base = len(seconds)
            for op, arg, const in p.code:
                window = op >= OPS["RATE"]
                ops.append(op)
                args.append(arg + base if window else arg)
                consts.append(const)
            start.append(len(ops))
            in_tag += p.inputs
            in_start.append(len(in_tag))
            interval = intervals[i] if i < len(intervals) else 1.0
            seconds += p.windows
            caps += [window_capacity(w, interval) for w in p.windows]
        readers: list[list[int]] = [[] for _ in range(n_tags)]
        for i, p in enumerate(self.programs):
            for t in p.inputs:
                readers[t].append(i)
        cons_start = np.cumsum([0] + [len(r) for r in readers])
        cons_prog = [i for r in readers for i in r]
        depth = max((p.depth for p in self.programs), default=1)
        self.kernel = ExprKernel(n_tags, ops, args, consts, start, self.outputs, in_start, in_tag, cons_start,
                                 cons_prog, seconds, caps, depth)

    @property
    def last_value(self) -> np.ndarray:
        """The last value of every tag the kernel has seen (read tags and computed tags)."""
        return self.kernel.last_value

    @property
    def last_quality(self) -> np.ndarray:
        """The last quality of every tag; 255 for a tag never sampled."""
        return self.kernel.last_quality

    def evaluate(self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        """The computed samples a batch makes (tag, value, ts, quality; in time order) and, per
        computed sample, the index of the batch sample it goes before (the end of its tick);
        None when it makes none."""
        return self.kernel.evaluate(np.ascontiguousarray(tag, dtype=np.int32),
                                    np.ascontiguousarray(value, dtype=np.float64),
                                    np.ascontiguousarray(ts, dtype=np.float64),
                                    np.ascontiguousarray(quality, dtype=np.uint8))


def merged(batch: tuple[np.ndarray, ...], computed: tuple[np.ndarray, ...]) -> tuple[np.ndarray, ...]:
    """A batch with the computed samples it made, each at the end of its tick: what the
    detector families judge, so that a tick's computed samples are judged with its read ones."""
    pos = computed[4]
    if pos[0] == len(batch[0]):  # one tick (a device's read): append
        return tuple(np.concatenate([a, c]) for a, c in zip(batch, computed[:4], strict=True))
    return tuple(np.insert(a, pos, c) for a, c in zip(batch, computed[:4], strict=True))
