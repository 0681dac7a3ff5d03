"""The agent's uplinks: one per [uplink] / [[uplinks]] entry, each on its own thread with its own
cursor over the one outbox, the transport picked by the scheme of its url.

A transport is one module: ``agent.uplink`` (MQTT: a streaming session with an in-flight window,
status and will) or a Transport behind the request/answer loop of ``agent.sender``
(``agent.http_transport``, ``agent.tcp_transport``). Adding one is a module and an entry in ``build``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.config import Config, UplinkSection
from agent.encoding import row_encoder, unnumbered_encoder
from agent.payloads import dumps
from agent.provincial import uuid_field
from agent.sender import RequestUplink


def build(cfg: Config, u: UplinkSection, outbox_path, status: Callable[[bool], dict[str, Any]],
          on_command: Callable[[bytes, bool], None] | None = None,
          on_refused: Callable[[str, str], None] | None = None) -> Any:
    """The uplink ``u`` of the agent configured by ``cfg``."""
    profile = cfg.provincial if u.profile == "provincial" else None
    rows = row_encoder(u.profile, profile)
    encode = dumps if profile is None else lambda doc: profile.encode(profile.status(time.time(), doc["online"]))
    unnumbered = unnumbered_encoder(profile)

    def heartbeat(online: bool) -> bytes:
        return encode(status(online))

    if u.transport == "http":
        from agent.http_transport import HttpTransport

        values = {"appid": str(getattr(profile, "appid", "") or ""),
                  "appsecret": str(getattr(profile, "appsecret", "") or "")}
        local_time = profile.local_time if profile is not None else None
        transport = HttpTransport(u, cfg.http, values, **({"local_time": local_time} if local_time else {}))
        return RequestUplink(u, outbox_path, transport, rows, on_refused, heartbeat=heartbeat, unnumbered=unnumbered)
    if u.transport == "tcp":
        from agent.tcp_transport import TcpTransport

        id_field = uuid_field(profile.envelope if profile is not None else "") or ""
        transport = TcpTransport(u, cfg.http.success, id_field)
        return RequestUplink(u, outbox_path, transport, rows, on_refused, heartbeat=heartbeat, unnumbered=unnumbered)
    from agent.uplink import Uplink

    return Uplink(u, cfg.agent.plant, outbox_path, status, encode=encode, on_command=on_command, rows=rows,
                  unnumbered=unnumbered)


class Uplinks:
    """Every uplink of the agent, started, woken and stopped together."""

    def __init__(self, members: Sequence[Any]):
        self.members = list(members)

    @property
    def names(self) -> list[str]:
        return [u.name for u in self.members]

    def start(self) -> None:
        for u in self.members:
            u.start()

    def wake(self) -> None:
        for u in self.members:
            u.wake()

    def announce(self) -> None:
        """Publish the status message now (it changed in a way the platform must hear at once)."""
        for u in self.members:
            u.announce()

    def send_unnumbered(self, docs: list[dict[str, Any]]) -> None:
        """Alarm messages the outbox cannot store now: each uplink that can carry them sends them
        at once from memory (agent.unnumbered)."""
        for u in self.members:
            if u.memory.add(docs):
                u.wake()

    def withdraw_unnumbered(self) -> None:
        """The outbox stored them: their numbered records follow, the unsent copies are dropped."""
        for u in self.members:
            u.memory.withdraw()

    def stop(self, flush_s: float = 5.0) -> None:
        """Each flushes for up to ``flush_s``, all at once (one slow platform does not hold the others)."""
        threads = [threading.Thread(target=u.stop, args=(flush_s,)) for u in self.members]
        for t in threads:
            t.start()
        for t in threads:
            t.join()

    @property
    def sent_count(self) -> int:
        return sum(u.sent_count for u in self.members)

    def all_connected(self) -> bool:
        return all(u.connected.is_set() for u in self.members)

    def view(self) -> dict[str, dict[str, Any]]:
        """Per uplink, for the status message and the local API."""
        return {u.name: {"transport": u.cfg.transport, "connected": u.connected.is_set(), "sent": u.sent_count,
                         "dead_letters": u.dead_letters, "unnumbered_sent": u.memory.sent, "last_error": u.last_error}
                for u in self.members}
