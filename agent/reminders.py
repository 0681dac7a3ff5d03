"""The provincial profile's repeat-while-active: every active alarm is sent again each
``repeat_s``, with the seq of its last transition (a reminder, not a new event).

Part of the shell: it remembers the seq of each alarm's last committed message and, on its own
schedule, writes the reminders into the outbox's alarm lane.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from agent.loops import LoopHealth
from agent.outbox import ALARM, Outbox
from agent.payloads import dumps
from agent.pipeline import Pipeline


class Reminders:
    def __init__(self, pipeline: Pipeline, outbox: Outbox, wake: Callable[[], None], health: LoopHealth | None = None):
        """``wake`` tells the uplink there is something new in the outbox. ``seq_of`` is
        filled at start from the outbox (Outbox.last_seqs), so an alarm active across a restart
        is repeated after it."""
        self.pipeline = pipeline
        self.health = health or LoopHealth()
        self.outbox = outbox
        self.wake = wake
        self.seq_of: dict[str, int] = {}  # alarm id -> seq of its last message

    def committed(self, messages: list[dict[str, Any]]) -> None:
        for m in messages:
            self.seq_of[m["id"]] = m["seq"]

    async def run(self) -> None:
        profile = self.pipeline.cfg.provincial
        if profile is None or profile.repeat_s <= 0:
            return
        while True:
            await asyncio.sleep(profile.repeat_s)
            with self.health.guard("provincial-repeat"):
                self.repeat()
            self.wake()

    def repeat(self) -> None:
        manager = self.pipeline.manager
        for alarm in manager.active():
            seq = self.seq_of.get(alarm.id)
            if seq is None:
                continue
            doc = {**manager.message(alarm, "active", alarm.ts), "seq": seq}
            # a row without a seq of its own: the provincial uplinks send it as a repeat,
            # the json ones skip it (agent.encoding)
            self.outbox.append(self.pipeline.alarm_topic, dumps(doc), lane=ALARM)
