"""What operators reach: alarm commands (MQTT and the local API), the API's routes and the
Prometheus metrics text.

Part of the shell. Commands change alarms on the event loop, which owns them; their messages are
committed like any other alarm message.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from agent.alarms import Alarm, AlarmManager, CommandError
from agent.commands import COMMAND_SCHEMA, Command, InvalidCommand, parse_command, parse_payload
from agent.payloads import dumps, number, rfc3339

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("plantwatch.agent")


def alarm_view(a: Alarm) -> dict[str, Any]:
    """An alarm's current state for the local API."""
    return {
        "id": a.id, "kind": a.kind, "tag": a.tag, "device": a.device, "level": a.level,
        "active": a.active, "acked": a.acked, "shelved": a.shelved,
        "shelved_until": rfc3339(a.shelve_until) if a.shelve_until else None,
        "suppressed": a.suppressed, "out_of_service": a.out_of_service, "latched": a.latched,
        "chattering": a.chattering, "value": number(a.value), "limit": number(a.limit),
        "ts": rfc3339(a.ts) if a.ts else None,
        "active_since": rfc3339(a.active_since) if a.active_since else None,
    }


class Operators:
    """The operator-facing side of an Agent."""

    def __init__(self, agent: Agent):
        self.agent = agent
        self.loop: asyncio.AbstractEventLoop | None = None  # set by Agent.run; commands wait for it

    @property
    def manager(self) -> AlarmManager:
        return self.agent.pipeline.manager

    def apply_command(self, cmd: Command, source: str) -> tuple[int, dict[str, Any]]:
        """Apply an operator command; the resulting alarm message is committed like any other."""
        try:
            messages = self.manager.command(cmd.op, cmd.id, time.time(), cmd.user, cmd.comment, cmd.duration_s)
        except CommandError as exc:
            log.warning("%s command %s %s rejected: %s", source, cmd.op, cmd.id, exc)
            self.agent.alarm_counts = self.manager.kpis(time.time())
            return 409, {"ok": False, "error": str(exc)}
        self.agent.commit(messages)
        log.info("%s command %s %s by %r applied", source, cmd.op, cmd.id, cmd.user)
        return 200, {"ok": True, "messages": messages}

    def from_uplink(self, payload: bytes) -> None:
        """On the uplink thread: hand the command to the event loop, which owns the alarms."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.mqtt_command, payload)

    def mqtt_command(self, payload: bytes) -> None:
        """A message on {prefix}/{plant}/cmd (only subscribed when commands are enabled)."""
        try:
            cmd = parse_payload(payload, self.agent.cfg.agent.plant)
        except InvalidCommand as exc:
            self.manager.commands_rejected += 1
            log.warning("mqtt command rejected: %s", exc)
            return
        self.apply_command(cmd, "mqtt")

    def api_post(self, alarm_id: str, op: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        plant = self.agent.cfg.agent.plant
        doc = {"schema": COMMAND_SCHEMA, "plant": plant, "op": op, "id": alarm_id, **body}
        try:
            cmd = parse_command(doc, plant)
        except InvalidCommand as exc:
            self.manager.commands_rejected += 1
            return 400, {"ok": False, "error": str(exc)}
        return self.apply_command(cmd, "local")

    def api_get(self, path: str) -> tuple[int, str, bytes]:
        if path == "/alarms":
            alarms = [alarm_view(a) for a in self.manager.alarms.values()]
            return 200, "application/json", dumps({"alarms": alarms})
        if path == "/status":
            return 200, "application/json", dumps(self.agent.status(self.agent.uplinks.all_connected()))
        if path == "/metrics":
            return 200, "text/plain; version=0.0.4", self.metrics().encode()
        return 404, "application/json", dumps({"error": f"no such resource {path}"})

    def metrics(self) -> str:
        """The Prometheus text exposition of the alarm-system KPIs, the uplink and the devices."""
        agent, uplinks = self.agent, self.agent.uplinks
        k = self.manager.kpis(time.time())
        depth = agent.outbox.depth()
        # one row per metric: (name, type, help, value) -- a table, read top to bottom
        lines = [
            ("plantwatch_alarms_active", "gauge", "active alarms", k["active"]),
            ("plantwatch_alarms_unacked", "gauge", "unacknowledged alarms", k["unacked"]),
            ("plantwatch_alarms_shelved", "gauge", "shelved alarms", k["shelved"]),
            ("plantwatch_alarms_suppressed", "gauge", "suppressed alarms", k["suppressed"]),
            ("plantwatch_alarms_chattering", "gauge", "alarms chattering now", len(k["chattering"])),
            ("plantwatch_alarms_stale", "gauge", "alarms active longer than stale_s", len(k["stale"])),
            ("plantwatch_alarm_flood", "gauge", "1 while more than flood_count alarms in flood_window_s",
             int(k["flood"])),
            ("plantwatch_alarm_floods_total", "counter", "alarm floods begun", k["floods"]),
            ("plantwatch_commands_rejected_total", "counter", "operator commands rejected", k["commands_rejected"]),
            ("plantwatch_alarm_seq", "counter", "last alarm seq committed", agent.outbox_seq),
            ("plantwatch_uplink_sent_total", "counter", "messages acknowledged by the platforms, all uplinks",
             uplinks.sent_count),
            ("plantwatch_uplink_connected", "gauge", "1 while every uplink is connected", int(uplinks.all_connected())),
            ("plantwatch_batches_total", "counter", "sample batches processed", agent.batches),
        ]
        out = []
        for name, kind, text, value in lines:
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        out += ["# HELP plantwatch_outbox_depth unsent messages per lane", "# TYPE plantwatch_outbox_depth gauge"]
        out += [f'plantwatch_outbox_depth{{lane="{lane}"}} {n}' for lane, n in depth.items()]
        out += self.uplink_metrics()
        out += ["# HELP plantwatch_device_up 1 while the device answers", "# TYPE plantwatch_device_up gauge"]
        out += [f'plantwatch_device_up{{device="{d}"}} {int(s.get("state") == "ok")}'
                for d, s in agent.device_state.items()]
        return "\n".join(out) + "\n"

    def uplink_metrics(self) -> list[str]:
        """Per uplink (label ``uplink``): connected, sent, dead-lettered, and what it has yet to deliver."""
        view = self.agent.uplinks.view()
        out = []
        for name, kind, text, field in (
            ("plantwatch_uplink_up", "gauge", "1 while this uplink's platform answers", "connected"),
            ("plantwatch_uplink_delivered_total", "counter", "messages this uplink's platform acknowledged", "sent"),
            ("plantwatch_uplink_dead_letters_total", "counter", "messages this uplink's platform refused for good",
             "dead_letters"),
        ):
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
            out += [f'{name}{{uplink="{u}",transport="{v["transport"]}"}} {int(v[field])}' for u, v in view.items()]
        out += ["# HELP plantwatch_uplink_depth messages this uplink has yet to deliver, per lane",
                "# TYPE plantwatch_uplink_depth gauge"]
        for u in view:
            out += [f'plantwatch_uplink_depth{{uplink="{u}",lane="{lane}"}} {n}'
                    for lane, n in self.agent.outbox.depth(u).items()]
        return out
