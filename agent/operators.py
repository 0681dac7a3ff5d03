"""What operators reach: alarm commands (signed MQTT commands, the operator socket and the API
port), the API's routes and the Prometheus metrics text.

Part of the shell. Commands change alarms on the event loop, which owns them; their messages are
committed like any other alarm message, with the authenticated author in ``context.user``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from agent.alarms import Alarm, AlarmManager, CommandError
from agent.commands import COMMAND_SCHEMA, Command, InvalidCommand, parse_command
from agent.payloads import dumps, number, rfc3339
from agent.signing import Gate, Refused, load_keys

if TYPE_CHECKING:
    from agent.runtime import Agent

log = logging.getLogger("plantwatch.agent")


def alarm_view(a: Alarm) -> dict[str, Any]:
    """An alarm's current state for the operator API."""
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
        rules = agent.cfg.alarm_system
        self.gate = Gate(load_keys(rules.command_key_file, rules.command_public_key_file), rules.command_window_s,
                         rules.command_rate_per_min, agent.started) if rules.commands else None
        self.api_refused: Counter[str] = Counter()  # reason -> requests refused by the operator API
        self.commands_refused: Counter[str] = Counter()  # reason -> MQTT commands refused before parsing

    @property
    def manager(self) -> AlarmManager:
        return self.agent.pipeline.manager

    def apply_command(self, cmd: Command, actor: dict[str, str]) -> tuple[int, dict[str, Any]]:
        """Apply an operator command by ``actor`` ({user, via}); the resulting alarm message is
        committed like any other. The command's own ``user`` is kept as claimed, not as author."""
        claimed = {**actor, "claimed_user": cmd.user} if cmd.user and cmd.user != actor["user"] else actor
        try:
            messages = self.manager.command(cmd.op, cmd.id, time.time(), actor["user"], cmd.comment, cmd.duration_s,
                                            {k: v for k, v in claimed.items() if k != "user"})
        except CommandError as exc:
            log.warning("%s command %s %s by %s rejected: %s", actor["via"], cmd.op, cmd.id, actor["user"], exc)
            self.agent.alarm_counts = self.manager.kpis(time.time())
            return 409, {"ok": False, "error": str(exc)}
        self.agent.commit(messages)
        log.info("%s command %s %s by %s applied", actor["via"], cmd.op, cmd.id, actor["user"])
        return 200, {"ok": True, "messages": messages}

    def from_uplink(self, payload: bytes, retained: bool = False) -> None:
        """On the uplink thread: hand the command to the event loop, which owns the alarms."""
        if self.loop is not None:
            self.loop.call_soon_threadsafe(self.mqtt_command, payload, retained)

    def mqtt_command(self, payload: bytes, retained: bool = False) -> None:
        """A message on {prefix}/{plant}/cmd (only subscribed when commands are enabled)."""
        if self.gate is None:
            return
        try:
            alg, doc = self.gate.admit(payload, retained, time.time())
        except Refused as exc:
            self.commands_refused[exc.reason] += 1
            log.warning("mqtt command refused (%s): %s", exc.reason, exc)
            return
        try:
            cmd = parse_command(doc, self.agent.cfg.agent.plant)
        except InvalidCommand as exc:
            self.manager.commands_rejected += 1
            log.warning("mqtt command rejected: %s", exc)
            return
        self.apply_command(cmd, {"user": f"mqtt:{alg}", "via": "mqtt"})

    def api_refusal(self, reason: str) -> None:
        self.api_refused[reason] += 1

    def api_post(self, alarm_id: str, op: str, body: dict[str, Any], actor: dict[str, str]) -> tuple[int, dict[str, Any]]:
        plant = self.agent.cfg.agent.plant
        doc = {**body, "schema": COMMAND_SCHEMA, "plant": plant, "op": op, "id": alarm_id}
        try:
            cmd = parse_command(doc, plant)
        except InvalidCommand as exc:
            self.manager.commands_rejected += 1
            return 400, {"ok": False, "error": str(exc)}
        return self.apply_command(cmd, actor)

    def api_get(self, target: str) -> tuple[int, str, bytes]:
        path = target.split("?", 1)[0]
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
            ("plantwatch_console_clients", "gauge", "console pages listening to /events", len(agent.console.clients)),
            ("plantwatch_console_frames_total", "counter", "console frames built", agent.console.frames),
            ("plantwatch_console_cpu_seconds_total", "counter", "CPU of the event loop spent building and writing "
             "console frames", round(agent.console.cpu_s, 6)),
            ("plantwatch_trend_history_reads", "gauge", "trend requests reading the history (one at a time) or waiting "
             "to", agent.trends.reader.reading),
            ("plantwatch_trend_history_busy_total", "counter", "trend requests refused while the history's line was "
             "full", agent.trends.reader.busy),
        ]
        out = []
        for name, kind, text, value in lines:
            out += [f"# HELP {name} {text}", f"# TYPE {name} {kind}", f"{name} {value}"]
        out += ["# HELP plantwatch_outbox_depth unsent messages per lane", "# TYPE plantwatch_outbox_depth gauge"]
        out += [f'plantwatch_outbox_depth{{lane="{lane}"}} {n}' for lane, n in depth.items()]
        out += self.refusal_metrics()
        out += self.uplink_metrics()
        out += ["# HELP plantwatch_device_up 1 while the device answers", "# TYPE plantwatch_device_up gauge"]
        out += [f'plantwatch_device_up{{device="{d}"}} {int(s.get("state") == "ok")}'
                for d, s in agent.device_state.items()]
        return "\n".join(out) + "\n"

    def refusal_metrics(self) -> list[str]:
        """Refusals by reason: of the operator API (token, host, origin, proxy ...) and of MQTT
        commands before they are parsed (signature, replay, stale, retained, rate ...)."""
        agent = self.agent
        out = ["# HELP plantwatch_api_up 1 while the operator socket / the API port listens",
               "# TYPE plantwatch_api_up gauge",
               f'plantwatch_api_up{{listener="socket"}} {int(agent.socket_api is not None)}',
               f'plantwatch_api_up{{listener="port"}} {int(agent.api is not None)}',
               f'plantwatch_api_up{{listener="lan"}} {int(agent.lan is not None)}']
        for name, text, counts, reasons in (
            ("plantwatch_api_refused_total", "operator API requests refused, by reason", self.api_refused,
             ("no_token", "bad_token", "read_only", "host", "origin", "proxy", "body_fields", "bad_request")),
            ("plantwatch_commands_refused_total", "MQTT commands refused before parsing, by reason",
             self.commands_refused, ("unsigned", "signature", "stale", "replay", "retained", "rate", "malformed")),
        ):
            out += [f"# HELP {name} {text}", f"# TYPE {name} counter"]
            out += [f'{name}{{reason="{r}"}} {counts[r]}' for r in sorted(set(reasons) | set(counts))]
        return out

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
