"""``plantwatch check --connect`` for OPC-UA: one session, one Read of every tag's Value, then
CloseSession. Shows the value the agent would see, the server's own type and value, and its
status code."""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Sequence

from drivers.base import COMM_FAIL, GOOD, DeviceSpec, Reading, TagSpec
from drivers.opcua import config
from drivers.opcua.buffer import Stats
from drivers.opcua.decode import columns, quality_of, status_name
from drivers.opcua.diagnose import connect_advice, failure
from drivers.opcua.poll import read_nodes
from drivers.opcua.session import CONNECT_ERRORS, Session


async def read_once(device: DeviceSpec, tags: Sequence[TagSpec]) -> list[Reading]:
    """One Reading per tag; a session that does not open gives every tag its error."""
    opts, problems = config.parse(device, tags)
    if opts is None or problems:
        text = "; ".join(f"{p.path}: {p.message}" for p in problems)
        return [Reading(t, math.nan, COMM_FAIL, error=text) for t in tags]
    session = Session(opts, Stats(), lambda reason: None)
    wait = max(opts.timeout_s, 5.0) * 2
    try:
        try:
            await asyncio.wait_for(session.open(), wait)
            now = time.time()
            dvs = await read_nodes(session.client, [t.node_id for t in opts.tags], opts.batch_size, wait)
        except CONNECT_ERRORS as exc:
            text = f"{failure(exc, opts)} — {connect_advice(opts, device.name)}"
            return [Reading(t, math.nan, COMM_FAIL, error=text) for t in tags]
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(session.close(), wait)
    values, _, status = columns(dvs, now)
    quality, _ = quality_of(status)
    out = []
    for tag, dv, raw, q, st in zip(tags, dvs, values, quality, status, strict=True):
        variant = dv.Value
        empty = variant is None or variant.VariantType.name == "Null"
        shown = "" if empty else f"{variant.VariantType.name} {variant.Value!r}"
        good = int(q) == GOOD and math.isfinite(raw)
        out.append(Reading(tag, raw * tag.scale + tag.offset if good else math.nan, int(q),
                           raw=f"{shown} {status_name(int(st))}".strip() if int(st) else shown,
                           error=None if good else status_name(int(st)) if int(st) else "not a number"))
    return out
