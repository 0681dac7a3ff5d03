"""Operator commands (ack, shelve, ...) from the operator API or the MQTT command topic.

One validation for every way in: the document must match docs/schemas/command.json, and the
alarm manager decides whether the operation applies. A rejected command changes nothing and
says why. (MQTT commands are signed; agent.signing checks the envelope first.)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.payloads import validator

OPS = ("ack", "shelve", "unshelve", "suppress", "unsuppress", "out_of_service", "in_service")
COMMAND_SCHEMA = "plantwatch.cmd/1"


@dataclass(frozen=True)
class Command:
    op: str
    id: str
    user: str = ""
    comment: str = ""
    duration_s: float | None = None


class InvalidCommand(ValueError):
    pass


def parse_command(doc: Any, plant: str) -> Command:
    """A validated Command from a decoded JSON document, or InvalidCommand naming the field."""
    errors = sorted(validator("command").iter_errors(doc), key=lambda e: list(e.path))
    if errors:
        e = errors[0]
        where = "/".join(str(p) for p in e.path) or "(root)"
        raise InvalidCommand(f"{where}: {e.message}")
    if doc["plant"] != plant:
        raise InvalidCommand(f"plant: {doc['plant']!r} is not this plant ({plant})")
    return Command(doc["op"], doc["id"], doc.get("user", ""), doc.get("comment", ""), doc.get("duration_s"))

