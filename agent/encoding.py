"""What each uplink sends for a stored row: the outbox keeps the json-profile document once, and
every uplink encodes it at send time in its own profile (one row, many encodings).

A json uplink sends the stored bytes as they are. A provincial uplink maps the document onto
the province's fields and lets the profile encode it (cipher, envelope). The provincial
reminders (alarm lane, no seq of their own: a repeat of the alarm's last message) exist for
provincial uplinks only; a json uplink skips them (None). A stored document without a
``schema`` is already in the province's fields: the profile only encodes it, a json uplink
skips it.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from agent.payloads import ALARM_SCHEMA, TELEMETRY_SCHEMA, dumps, parse_rfc3339
from agent.provincial import Profile

ALARM_LANE = 0  # agent.outbox.ALARM (the core does not import the outbox)

#: (lane, seq, stored payload, the time it is sent) -> the bytes to send, or None: not for this uplink
RowEncoder = Callable[[int, "int | None", bytes, float], "bytes | None"]


def json_rows(lane: int, seq: int | None, payload: bytes, now: float) -> bytes | None:
    if lane == ALARM_LANE and seq is None:
        return None
    return payload


def provincial_rows(profile: Profile) -> RowEncoder:
    def encode(lane: int, seq: int | None, payload: bytes, now: float) -> bytes | None:
        doc = json.loads(payload)
        schema = doc.get("schema")
        if schema == ALARM_SCHEMA:
            return profile.encode(profile.alarm(doc, repeat=seq is None))
        if schema == TELEMETRY_SCHEMA:
            # each point with the time of its own sample; a snapshot sent late (the backlog after
            # an outage) carries the 补传 mark
            samples = [(name, t["v"], t["q"], t.get("t") and parse_rfc3339(t["t"])) for name, t in doc["tags"].items()]
            ts = parse_rfc3339(doc["ts"])
            return profile.encode(profile.data(ts, samples, late=now - ts > profile.late_after_s), now=now)
        return profile.encode(doc)

    return encode


def unnumbered_encoder(profile: Profile | None) -> Callable[[dict], bytes] | None:
    """How an uplink encodes an alarm sent from memory, unnumbered (agent.unnumbered): the json
    document as it is; in the provincial profile only when ``[provincial.fields] unnumbered``
    names the province's field for it (its platforms key alarms on the seq field), else None."""
    if profile is None:
        return dumps
    if not profile.fields.get("unnumbered"):
        return None
    return lambda doc: profile.encode(profile.alarm(doc))


def row_encoder(profile_name: str, profile: Profile | None) -> RowEncoder:
    """The encoder of an uplink speaking ``profile_name`` (json | provincial)."""
    if profile_name == "provincial" and profile is not None:
        return provincial_rows(profile)
    return json_rows
