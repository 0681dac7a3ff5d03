"""Poll mode: every ``interval_s`` one Read of all the device's nodes (``batch_size`` nodes per
request), on the fixed-rate loop of drivers.base.PollingDriver."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
from asyncua import ua

from drivers.base import DeviceSpec, DriverError, PollingDriver, SampleBatch, TagSpec
from drivers.opcua import diagnose
from drivers.opcua.buffer import SampleBuffer, Stats
from drivers.opcua.config import DeviceOptions
from drivers.opcua.decode import columns, error_text
from drivers.opcua.session import Session


async def read_nodes(client, nodes: Sequence[ua.NodeId], batch_size: int, timeout_s: float) -> list[ua.DataValue]:
    """The Value attribute of ``nodes`` in Read requests of up to ``batch_size`` nodes; DriverError
    when a request fails."""
    parts: list[ua.DataValue] = []
    for start in range(0, len(nodes), batch_size):
        params = ua.ReadParameters()
        params.TimestampsToReturn = ua.TimestampsToReturn.Both
        params.MaxAge = 0
        for node_id in nodes[start:start + batch_size]:
            rv = ua.ReadValueId()
            rv.NodeId = node_id
            rv.AttributeId = ua.AttributeIds.Value
            params.NodesToRead.append(rv)
        try:
            parts.extend(await asyncio.wait_for(client.uaclient.session.read(params), timeout_s))
        except (ua.UaError, ConnectionError) as exc:
            raise DriverError(error_text(exc)) from None
    return parts


class Poller(PollingDriver):
    """The poll-mode half of the OPC-UA driver: PollingDriver keeps the rate and the reconnect
    backoff; this class opens the session and reads."""

    name = "opcua"

    def __init__(self, device: DeviceSpec, tags: Sequence[TagSpec], opts: DeviceOptions, stats: Stats,
                 buffer: SampleBuffer):
        super().__init__(device, tags)
        self.opts = opts
        self.buffer = buffer
        self.lost_reason: str | None = None
        self.session = Session(opts, stats, self._link_lost)

    def _link_lost(self, reason: str) -> None:
        self.lost_reason = reason

    async def connect(self) -> None:
        self.lost_reason = None
        try:
            await self.session.open()
        except (ua.UaError, OSError, TimeoutError) as exc:
            # PollingDriver retries on DriverError; asyncua's protocol errors are device faults too
            text = error_text(exc) if self.session.stats.connects else \
                diagnose.never_connected(exc, self.opts, self.device.name)
            raise DriverError(text) from None

    async def disconnect(self) -> None:
        await self.session.close()

    async def read(self) -> SampleBatch:
        client = self.session.client
        if client is None or not self.session.connected:
            raise DriverError(self.lost_reason or "not connected")
        now = time.time()
        parts = await read_nodes(client, [t.node_id for t in self.opts.tags], self.opts.batch_size,
                                 self.device.timeout_s * 2)
        values, ts, status = columns(parts, now)
        pos = np.arange(len(parts), dtype=np.int64)
        return self.buffer.batch((pos, values, ts, status))

    async def close(self) -> None:
        await self.session.close()
