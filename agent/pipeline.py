"""What happens to every batch, live or replayed: engine, alarm manager and the commit step.

The functional core of the agent, driven by samples and time: it reads no clock, opens no
socket and starts no thread. The live agent and ``plantwatch replay`` both run a Pipeline; the
outbox it commits to is injected (anything with ``append_alarms``), so replay can number the
messages itself.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Protocol

import numpy as np

import detectors
from agent.alarms import Alarm, AlarmManager
from agent.config import Config
from agent.payloads import dumps, topic
from detectors.base import ConditionChange, Family
from detectors.engine import Engine
from detectors.expr import Evaluator, merged
from detectors.tune import Cycles
from drivers.base import BAD, Quality, SampleBatch, frozen_tags

#: the ``device`` of a computed tag's samples and alarms: none reads it
COMPUTED_DEVICE = ""


class AlarmSink(Protocol):
    """Where committed alarm messages go (agent.outbox.Outbox, or replay's recorder)."""

    def append_alarms(self, topic: str, docs: Sequence[dict[str, Any]], now: float | None = None,
                      encode: Callable[[dict[str, Any]], bytes] = ..., states: Sequence[Any] = ()) -> list[int]: ...


def family_classes(cfg: Config) -> dict[str, type[Family]]:
    """The registered class of every detector family in use, in the order the engine runs them."""
    classes = {name: detectors.load(name) for name in cfg.families_in_use}
    return {name: classes[name] for name in sorted(classes, key=lambda n: (classes[n].order, n))}


def build_engine(cfg: Config) -> Engine:
    """One family object per detector family in use, each watching the tags configured for it."""
    params = cfg.family_params()
    families = [cls(len(cfg.tags), params[name]) for name, cls in family_classes(cfg).items()]
    index = cfg.tag_positions
    cycles = {index[n]: c for n, c in cfg.tuning.cycles.items()} if cfg.tuning is not None else {}
    return Engine(len(cfg.tags), families, Cycles(len(cfg.tags), cycles) if cycles else None)


def build_manager(cfg: Config) -> AlarmManager:
    """The alarm manager for the config's tags, with the words of each family in use."""
    describe = {name: cls.describe for name, cls in family_classes(cfg).items()}
    # a TagConfig has every attribute of a TagInfo: the config's tags, not a copy of each
    return AlarmManager(cfg.agent.plant, cfg.tags, cfg.alarm_system, describe, cfg.tag_positions)


def restore_grace(cfg: Config, alarm: Alarm, engine: Engine | None = None) -> float:
    """How long a detector may take to raise a restored alarm again: its on-delay and
    warm-up, plus a few polls of the device. A model's alarm: the on-delay the engine's model
    runs with (the config's, else the one ``plantwatch train`` chose, from the model file), its
    derived inputs' warm-up and its past ticks."""
    tag = next((t for t in cfg.tags if t.name == alarm.tag), None)
    if tag is None:
        return 0.0
    interval = cfg.interval_of(tag)
    params: Mapping[str, Any] = tag.families.get(alarm.kind, {})
    if "model" in alarm.context:  # a model's alarm: its delays are the model's options
        family = next((f for f in engine.families if f.name == alarm.kind), None) if engine is not None else None
        restart = getattr(family, "restart", lambda _: None)(alarm.context["model"])
        if restart is not None:
            on_delay, warmup_s, ticks = restart
            return on_delay + warmup_s + ticks * interval + 3 * interval + 2.0
        model = next((m for m in cfg.models if m.name == alarm.context["model"]), None)
        params = model.options if model else {}
    elif alarm.kind in tag.families:  # the family's defaults count too (an untrained chart's warm-up)
        params = {**detectors.load(alarm.kind).defaults, **params}
    # a command/feedback pair's on-delay is its mismatch_s
    on_delay = float(params.get("on_delay_s", params.get("mismatch_s", 0.0)) or 0.0)
    given = params.get("mean") is not None and params.get("sigma") is not None  # no warm-up then
    warmup = 0.0 if given else float(params.get("warmup", 0) or 0) * interval
    return on_delay + warmup + 3 * interval + 2.0


class Pipeline:
    """Engine + alarm manager + commit: what happens to every batch, live or replayed."""

    def __init__(self, cfg: Config, outbox: AlarmSink):
        """``outbox`` is anything with Outbox.append_alarms (replay numbers messages itself)."""
        self.cfg = cfg
        self.engine = build_engine(cfg)
        self.manager = build_manager(cfg)
        self.outbox = outbox
        self.alarm_topic = topic(cfg.uplink.topic_prefix, cfg.agent.plant, "alarm")
        plan = cfg.computed
        self.evaluator = Evaluator(len(cfg.tags), plan.programs, plan.intervals) if plan else None
        #: the computed samples the last batch made (telemetry records them), or None
        self.derived: SampleBatch | None = None
        # computed tag -> the tags whose quality explains its own: its inputs, read and computed
        self._computed = {p.out: tuple(dict.fromkeys((*plan.source_tags(p.out), *p.inputs))) for p in plan.programs}
        self._plans: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def restore_grace(self, alarm: Alarm) -> float:
        """``restore_grace`` with this pipeline's engine: a model's alarm waits for the delays
        the running model has."""
        return restore_grace(self.cfg, alarm, self.engine)

    def process(self, batch: SampleBatch, now: float) -> list[dict[str, Any]]:
        """Judge a batch; commit the resulting alarm messages (fsync) and return them. ``now``
        dates a device's comm alarm when the batch carries no sample to take the time from."""
        messages: list[dict[str, Any]] = []
        if batch.error is not None or len(batch):
            ts = float(batch.ts[0]) if len(batch) else now
            messages += self.manager.on_device(batch.device, batch.error, ts)
        self.derived = None
        if len(batch):
            changes = self.judge(batch.tag, batch.value, batch.ts, batch.quality)
            messages += self.manager.on_changes(changes)
        return self.commit(messages)

    def judge(self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray) -> list[ConditionChange]:
        """The engine over a batch (time-ordered) and the computed samples it makes, each
        computed sample judged at the end of its tick; ``derived`` holds those samples."""
        self.derived = None
        out = self.evaluator.evaluate(tag, value, ts, quality) if self.evaluator is not None else None
        if out is None:
            return self.engine.process(tag, value, ts, quality)
        self.derived = SampleBatch(COMPUTED_DEVICE, *out[:4])
        both = merged((tag, value, ts, quality), out)
        changes = self.engine.process(self._frozen(tag, out[0], both[0]), *both[1:])
        q = self.evaluator.last_quality
        return [self._reason(c) if c.active and c.tag in self._computed and q[c.tag] >= BAD else c
                for c in changes]

    def _frozen(self, tag: np.ndarray, computed: np.ndarray, both: np.ndarray) -> np.ndarray:
        """The tags of a device read with its computed samples as one frozen array, the same
        object while the read plan and the computed tags it moves stay the same, so that the
        families keep their plan for it (drivers.base.frozen_tags)."""
        if tag.flags.writeable:
            return both
        known = self._plans.get(id(tag))
        if known is None or known[0] is not tag or not np.array_equal(known[1], computed):
            if len(self._plans) > 4 * len(self.cfg.devices) + 16:  # plans of arrays gone
                self._plans.clear()
            known = self._plans[id(tag)] = (tag, computed.copy(), frozen_tags(both))
        return known[2] if np.array_equal(known[2], both) else both

    def _reason(self, c: ConditionChange) -> ConditionChange:
        """An alarm a computed tag of bad quality raises says why: its inputs (read tags, and
        computed tags it reads) of BAD or COMM_FAIL quality, or that its value is not finite."""
        assert self.evaluator is not None
        q = self.evaluator.last_quality
        names = [t.name for t in self.cfg.tags]
        bad = {names[s]: Quality(int(q[s])).name for s in self._computed[c.tag] if BAD <= q[s] <= 3}
        why = {"inputs": bad} if bad else {"reason": "the expression's value is not finite (a division by zero?)"}
        return replace(c, context={**c.context, **why})

    def commit(self, messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Make alarm messages durable (seq assigned, fsync) before anyone else sees them.
        Returns the messages stored now: none when the sink keeps them for later (agent.pending,
        while the outbox cannot take them; it answers no seqs and reports them once stored)."""
        if not messages:
            return messages
        ids = dict.fromkeys(m["id"] for m in messages)
        states = [(i, self.manager.snapshot(i)) for i in ids]
        # stored as the json-profile document; each uplink encodes it in its own profile
        # (agent.encoding)
        seqs = self.outbox.append_alarms(self.alarm_topic, messages, encode=dumps, states=states)
        return messages if seqs else []
