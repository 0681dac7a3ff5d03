"""Discrete alarms on bool tags: a state that is itself the alarm, and a command whose feedback
disagrees with it for too long. Both run the limit kernel of ``detectors._kernels`` on 0/1 values."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from detectors import _kernels
from detectors.base import BAD, COMM_FAIL, ConditionChange, Option
from detectors.kernel import KernelFamily, as_batch, column

#: limit-kernel level code -> discrete level: +1 is "value >= 0.5", -1 is "value <= 0.5"
DISCRETE_LEVELS = {1: "ON", -1: "OFF"}


class DiscreteFamily(KernelFamily):
    """State alarm: a bool tag alarms while its value equals ``alarm_on`` (true: 1, false: 0).

    The limit kernel with h = 0.5 (alarm on true) or l = 0.5 (alarm on false) and no deadband
    judges the 0/1 values, so the on- and off-delays behave exactly as for limits: the state
    must hold for ``on_delay_s`` before the alarm is raised and the return for ``off_delay_s``
    before it clears; a flip back before the delay expires restarts it. Configured from the
    tag's top-level ``alarm_on``, ``on_delay_s``, ``off_delay_s`` and ``alarm_text``.
    """

    name: ClassVar[str] = "discrete"
    tag_key: ClassVar[str | None] = "alarm_on"
    options: ClassVar[Mapping[str, Option]] = {
        "alarm_on": Option(True, "true: alarm while the value is 1; false: while it is 0"),
        "on_delay_s": Option(0.0, ">= 0; the alarm state must persist this long before the alarm is raised"),
        "off_delay_s": Option(0.0, ">= 0; the normal state must persist this long before the alarm clears"),
        "text": Option("", "the words of the alarm state in the message (the tag's `alarm_text`)"),
        "desc": Option("", "the point's description (the tag's `desc`)"),
    }
    levels: ClassVar[tuple[str, ...]] = tuple(DISCRETE_LEVELS.values())
    alarm_code: ClassVar[str] = "12"

    @classmethod
    def default_params(cls, tag: Mapping[str, Any]) -> Mapping[str, Any] | None:
        """Watched when the tag sets ``alarm_on``; its delays and words come with it."""
        if not isinstance(tag.get("alarm_on"), bool):
            return None
        return {
            "alarm_on": tag["alarm_on"],
            "on_delay_s": float(tag.get("on_delay_s") or 0.0),
            "off_delay_s": float(tag.get("off_delay_s") or 0.0),
            "text": tag.get("alarm_text") or "",
            "desc": tag.get("desc") or "",
        }

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems = super().check(params)
        for key in ("on_delay_s", "off_delay_s"):
            v = params.get(key)
            if isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0:
                problems.append((key, f"must be >= 0, not {v!r}"))
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        p = [self.params[t] for t in self.tags]
        on = np.array([bool(x["alarm_on"]) for x in p], dtype=bool)
        nan = np.full(len(p), math.nan)
        self.kernel = _kernels.LimitKernel(
            self.slot_of_tag, nan, np.where(on, 0.5, math.nan), np.where(on, math.nan, 0.5), nan,
            np.zeros(len(p)), column(p, "on_delay_s"), column(p, "off_delay_s"),
        )

    def change(self, tag: int, prev: int, new: int, value: float, ts: float, detail: float) -> ConditionChange:
        p = self.params[tag]
        level = DISCRETE_LEVELS[new or prev]
        return ConditionChange(
            tag, self.name, level, new != 0, value, 1.0 if p["alarm_on"] else 0.0, ts,
            {"text": p["text"], "desc": p["desc"]},
        )

    @classmethod
    def describe(cls, level: str, active: bool, value: float, limit: float,
                 context: Mapping[str, Any]) -> str | None:
        desc = context.get("desc") or ""
        text = context.get("text") or ("on" if level == "ON" else "off")
        if active:
            return f"{desc} 报警状态 alarm state: {text}".strip()
        return f"{desc} 报警状态恢复 alarm state cleared: {text}".strip()


class MismatchFamily(KernelFamily):
    """Command vs feedback: a bool command tag alarms while its ``feedback`` tag disagrees with
    it for ``mismatch_s`` (a valve commanded open that reports closed).

    The last usable value of every watched tag is kept in one array, updated per batch by one
    vectorised assignment; the pairs are compared with numpy at every tick that brings a value
    of either tag, and the 0/1 disagreement passes the limit kernel (h = 0.5, on-delay
    ``mismatch_s``). A BAD or COMM_FAIL sample makes its tag unknown, which holds the alarm
    as it is until both are known again.
    """

    name: ClassVar[str] = "mismatch"
    tag_key: ClassVar[str | None] = "feedback"
    options: ClassVar[Mapping[str, Option]] = {
        "feedback": Option(None, "index of the feedback tag (from the tag's `feedback` name)", required=True),
        "mismatch_s": Option(None, "> 0; how long command and feedback must disagree before the alarm",
                             required=True),
        "off_delay_s": Option(0.0, ">= 0; how long they must agree again before the alarm clears"),
        "desc": Option("", "the command point's description (the tag's `desc`)"),
    }
    levels: ClassVar[tuple[str, ...]] = ("MISMATCH",)
    alarm_code: ClassVar[str] = "13"

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        p = [self.params[t] for t in self.tags]
        self.command = np.array(self.tags, dtype=np.int64)
        self.feedback = np.array([int(x["feedback"]) for x in p], dtype=np.int64)
        self.last = np.full(n_tags, math.nan)
        watched = np.zeros(n_tags, dtype=bool)
        watched[self.command] = True
        watched[self.feedback] = True
        self.watched = watched
        nan = np.full(len(p), math.nan)
        self.kernel = _kernels.LimitKernel(
            self.slot_of_tag, nan, np.full(len(p), 0.5), nan, nan, np.zeros(len(p)),
            column(p, "mismatch_s"), column(p, "off_delay_s"),
        )

    def update(
        self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray
    ) -> list[ConditionChange]:
        tag, value, ts, quality = as_batch(tag, value, ts, quality)
        mine = self.watched[tag]
        if not mine.any():
            return []
        tag, value, ts, quality = tag[mine], value[mine], ts[mine], quality[mine]
        usable = np.where((quality == BAD) | (quality == COMM_FAIL), math.nan, value)
        out: list[ConditionChange] = []
        # one pass per tick of the batch (a device read is one tick), never per sample
        for t in np.unique(ts).tolist():
            at = ts == t
            self.last[tag[at]] = usable[at]
            out.extend(self._judge(tag[at], t))
        return out

    def _judge(self, touched: np.ndarray, t: float) -> list[ConditionChange]:
        hit = np.zeros(self.n_tags, dtype=bool)
        hit[touched] = True
        pairs = np.flatnonzero(hit[self.command] | hit[self.feedback])
        cmd, fb = self.last[self.command[pairs]], self.last[self.feedback[pairs]]
        # unknown on either side: NaN, which the kernel skips (the alarm holds as it is)
        mismatch = np.where(np.isnan(cmd) | np.isnan(fb), math.nan, ((cmd >= 0.5) != (fb >= 0.5)).astype(float))
        n = len(pairs)
        events = self.kernel.update(
            self.command[pairs].astype(np.int32), np.ascontiguousarray(mismatch), np.full(n, t),
            np.zeros(n, dtype=np.uint8), None,
        )
        if events is None:
            return []
        idx, prev, new, _ = events
        cmd = self.command[pairs]
        return [self.change(int(cmd[i]), int(p), int(nw), math.nan, t, math.nan)
                for i, p, nw in zip(idx.tolist(), prev.tolist(), new.tolist(), strict=True)]

    def change(self, tag: int, prev: int, new: int, value: float, ts: float, detail: float) -> ConditionChange:
        """A mismatch event of command ``tag`` (its slot is its pair): the command's and the
        feedback's last values, not the kernel's 0/1 signal."""
        fb = int(self.feedback[self.slot_of_tag[tag]])
        return ConditionChange(
            tag, self.name, "MISMATCH", new != 0, float(self.last[tag]), float(self.last[fb]), ts,
            {"feedback_value": float(self.last[fb]), "mismatch_s": float(self.params[tag]["mismatch_s"]),
             "desc": self.params[tag]["desc"]},
        )

    @classmethod
    def describe(cls, level: str, active: bool, value: float, limit: float,
                 context: Mapping[str, Any]) -> str | None:
        desc = context.get("desc") or ""
        if active:
            return (f"{desc} 指令与反馈不一致 command/feedback mismatch: command {value:g}, feedback {limit:g} "
                    f"for {context.get('mismatch_s', 0):g} s").strip()
        return f"{desc} 指令与反馈一致 command/feedback agree again".strip()
