"""The OPC-UA driver: monitored items in one subscription per device (or batched Reads), as SampleBatches.

The driver itself only checks the config, describes the plan and composes the parts:
``session`` (client, security, connect and disconnect, orphaned sessions), ``items`` (monitored
item requests), ``subscription`` (subscribe mode), ``poll`` (poll mode), ``buffer`` and
``decode`` (from DataValues to SampleBatches).

Only session, Read, Browse and subscription/monitored-item services are used, never Write or Call.
"""

from __future__ import annotations

import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from typing import Any

from drivers.base import Command, DeviceSpec, Driver, Problem, Reading, SampleBatch, Simulator, TagSpec
from drivers.opcua import cli, config
from drivers.opcua.buffer import SampleBuffer, Stats
from drivers.opcua.poll import Poller
from drivers.opcua.subscription import Subscriber


class OpcUaDriver(Driver):
    """OPC-UA client for one device: ``mode = "subscribe"`` (default) or ``"poll"``."""

    name = "opcua"
    schemes = ("opc.tcp",)
    device_keys = config.DEVICE_KEYS
    tag_keys = config.TAG_KEYS
    url_forms = ("opc.tcp://host:port/path",)
    # asyncua logs a traceback every second while a server is away; the comm alarm says it once
    loggers = {"asyncua": logging.CRITICAL}
    probe_summary = "browse an OPC-UA server"
    typed_by_config = False  # the server sends typed values

    @classmethod
    def check(cls, device: DeviceSpec, tags: Sequence[TagSpec]) -> list[Problem]:
        return config.parse(device, tags)[1]

    @classmethod
    def plan(cls, device: DeviceSpec, tags: Sequence[TagSpec]) -> list[str]:
        opts, problems = config.parse(device, tags)
        if opts is None:
            return [f"{len(tags)} tags (config has problems)"]
        sec = "no security" if not opts.secure else f"{opts.security_policy}/{opts.security_mode}"
        login = f"user {opts.username}" if opts.username else "anonymous"
        if opts.username and not opts.secure:
            login += " (PASSWORD IN CLEAR: allow_insecure_login)"
        n = len(tags)
        calls = max(1, math.ceil(n / opts.batch_size)) if n else 0
        if opts.mode == "poll":
            return [f"poll {n} nodes every {opts.interval_s:g} s in {calls} Read request(s) "
                    f"of up to {opts.batch_size} nodes; {sec}; {login}"]
        sampling = sorted({t.sampling_interval_ms for t in opts.tags})
        queues = sorted({t.queue_size for t in opts.tags})
        dead = sum(1 for t in opts.tags if t.deadband_abs is not None or t.deadband_percent is not None)
        return [
            f"1 subscription, publishing interval {opts.publishing_interval_ms:g} ms, {n} monitored items "
            f"created in {calls} request(s) of up to {opts.batch_size}",
            f"sampling interval(s) {', '.join(f'{s:g}' for s in sampling) or '-'} ms, queue size(s) "
            f"{', '.join(map(str, queues)) or '-'}, {dead} item(s) with deadband; {sec}; {login}",
        ]

    @classmethod
    def probe_arguments(cls, group: Any) -> None:
        cli.probe_arguments(group)

    @classmethod
    async def probe(cls, url: str, options: Mapping[str, Any]) -> list[str]:
        return await cli.probe(url, options)

    @classmethod
    async def read_once(cls, device: DeviceSpec, tags: Sequence[TagSpec]) -> list[Reading]:
        from drivers.opcua.once import read_once

        return await read_once(device, tags)

    @classmethod
    def commands(cls) -> Sequence[Command]:
        return cli.COMMANDS

    @classmethod
    def simulator(cls, device: DeviceSpec, tags: Sequence[TagSpec],
                  values: Callable[[], Mapping[str, float]]) -> Simulator:
        from drivers.opcua.simulator import OpcUaSimulator

        return OpcUaSimulator(device, tags, values)

    def __init__(self, device: DeviceSpec, tags: Sequence[TagSpec]):
        super().__init__(device, tags)
        opts, problems = config.parse(device, tags)
        if opts is None or problems:
            raise ValueError("; ".join(f"{p.key}: {p.message}" for p in problems))
        self.opts: config.DeviceOptions = opts
        self.stats = Stats()
        self.buffer = SampleBuffer(device.name, self.tags, self.tag_indices, opts.max_pending_samples, self.stats)
        self.mode: Subscriber | Poller = (
            Poller(device, self.tags, opts, self.stats, self.buffer) if opts.mode == "poll"
            else Subscriber(device, self.tags, self.tag_indices, opts, self.stats, self.buffer))

    @property
    def filter_refusals(self) -> dict[str, str]:
        """Tag name -> status name, for the tags whose deadband the server refused at the last
        connection (subscribe mode; poll mode has no deadbands)."""
        return self.mode.filter_refusals if isinstance(self.mode, Subscriber) else {}

    def report(self) -> list[dict[str, Any]]:
        """Subscribe mode: the subscription's state; poll mode: the Read requests; both: the counters."""
        st = self.stats
        counters = [["samples", st.samples], ["connects", st.connects], ["reconnects", st.reconnects],
                    ["missed messages", st.missed_messages], ["overflows (server, client)",
                                                              f"{st.server_overflows}, {st.client_overflows}"],
                    ["items refused", st.bad_items], ["deadbands refused", st.filters_refused]]
        if isinstance(self.mode, Subscriber):
            rows = self.mode.state() + counters
            title = "OPC-UA subscription"
        else:
            n = len(self.tags)
            rows = [["mode", "poll"], ["nodes", n], ["nodes per Read", self.opts.batch_size],
                    ["Reads per poll", max(1, math.ceil(n / self.opts.batch_size)) if n else 0]] + counters
            title = "OPC-UA reads"
        return [{"title": title, "columns": ["", ""], "rows": rows}]

    @property  # type: ignore[override]
    def last_latency_s(self) -> float | None:
        """Poll mode: the last Read of every node; subscribe mode: None (the server pushes)."""
        return self.mode.last_latency_s if isinstance(self.mode, Poller) else None

    def batches(self) -> AsyncIterator[SampleBatch]:
        return self.mode.batches()

    async def close(self) -> None:
        await self.mode.close()


__all__ = ["OpcUaDriver"]
