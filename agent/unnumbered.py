"""Alarm messages an uplink sends from memory, beside the outbox: the unnumbered storage alarm.

Part of the shell. While the outbox cannot store alarm messages, a ``storage`` alarm raised
about it cannot wait for the outbox to be sent: the agent hands a copy without a seq
(``agent.payloads.unnumbered``) to every uplink, which keeps it here and sends it ahead of its
outbox rows, again on every new connection or after a failed attempt, until the platform took
it once (a broker's PUBACK, a success answer) or the agent withdraws it (the outbox stored the
numbered record: that one follows, and this copy has nothing left to say). A platform that
refuses it for good is logged; nothing is dead-lettered, since no row stands behind it.

Each uplink encodes the message in its own profile when it sends it (``encode``); an uplink
whose profile has no way to say "unnumbered" (``encode`` None: the provincial profile without
``[provincial.fields] unnumbered``) carries none, and its platform learns of the fault from
the numbered record.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

log = logging.getLogger("plantwatch.uplink")

LIMIT = 100  # messages kept per uplink; beyond it the oldest go (each is a storage alarm transition)

#: an unnumbered alarm document -> the bytes the uplink sends
Encode = Callable[[dict[str, Any]], bytes]


class Unnumbered:
    """The unnumbered messages one uplink still has to send; any thread adds, the uplink's own
    thread takes and acknowledges."""

    def __init__(self, name: str, encode: Encode | None):
        self.name = name
        self.encode = encode
        self.sent = 0  # messages the platform took
        self._docs: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def add(self, docs: Sequence[dict[str, Any]]) -> bool:
        """Keep ``docs`` to send; False when this uplink carries no unnumbered message."""
        if self.encode is None:
            return False
        with self._lock:
            self._docs.extend(docs)
            del self._docs[:-LIMIT]
        return True

    def withdraw(self) -> None:
        """The numbered records are stored: what is not yet sent is not sent any more."""
        with self._lock:
            self._docs.clear()

    def pending(self) -> list[dict[str, Any]]:
        """What is still to send, oldest first."""
        with self._lock:
            return list(self._docs)

    def done(self, doc: dict[str, Any], refused: str = "") -> None:
        """``doc`` reached the platform (or was refused for good: ``refused`` says why)."""
        with self._lock:
            self._docs = [d for d in self._docs if d is not doc]
        if refused:
            log.error("uplink %s: the platform refused the unnumbered alarm %s %s (%s); its numbered record "
                      "follows once stored", self.name, doc.get("id"), doc.get("state"), refused)
        else:
            self.sent += 1
            log.info("uplink %s: unnumbered alarm %s %s sent from memory", self.name, doc.get("id"), doc.get("state"))
