"""The OPC-UA driver: monitored items in one subscription per device (or batched Reads), as SampleBatches.

Subscribe mode (the default) creates one monitored item per tag, in batches, and turns the
server's notifications into arrays straight from asyncua's decoded PublishResponse, without
asyncua's per-notification handler tasks or its bounded iterator queue (which drops silently).
Nothing is dropped without being counted: a server-side queue overflow (the Overflow info bit of
a value's StatusCode), a missing notification message (a gap in the sequence numbers) and a full
client-side buffer all increment ``stats`` and make the affected tags' next samples UNCERTAIN.

The driver keeps its own connection loop (backoff with jitter; asyncua's auto-reconnect is off).
When the link is lost, the next attempt first takes over the old session on a new secure channel
and closes it, then creates a new session and subscription: the server never holds more than
one session of this driver. While the device is unreachable, batches carry COMM_FAIL and an
``error`` text; the first batch after recovery has ``error`` None.

Only session, Read, Browse and subscription/monitored-item services are used, never Write or Call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import Subscription

from drivers.base import (
    BAD,
    COMM_FAIL,
    GOOD,
    UNCERTAIN,
    DeviceSpec,
    DriverError,
    PollingDriver,
    Problem,
    SampleBatch,
    TagSpec,
    backoff_delay,
)
from drivers.opcua import config, security

log = logging.getLogger(__name__)

# StatusCode layout (OPC UA Part 4, 7.39): severity in bits 30-31, InfoType in bits 10-11
# (01 = DataValue), and for DataValue info the Overflow flag in bit 7.
_INFO_TYPE_MASK = 0x0C00
_INFO_TYPE_DATAVALUE = 0x0400
_OVERFLOW_BIT = 0x0080
# severity 0 Good, 1 Uncertain, 2 Bad, 3 (reserved) Bad
_SEVERITY_TO_QUALITY = np.array([GOOD, UNCERTAIN, BAD, BAD], dtype=np.uint8)

# Status codes of a monitored item whose filter the server cannot apply (e.g. a percent
# deadband on a node without EURange): the item is then created again without a deadband, since
# every change is better than no value at all; the refusal is counted and shown in the data.
_FILTER_REJECTED = {
    ua.StatusCodes.BadFilterNotAllowed,
    ua.StatusCodes.BadMonitoredItemFilterUnsupported,
    ua.StatusCodes.BadMonitoredItemFilterInvalid,
    ua.StatusCodes.BadDeadbandFilterInvalid,
}

KEEPALIVE_S = 2.0
CONNECT_ERRORS = (DriverError, OSError, TimeoutError, asyncio.TimeoutError, ua.UaError, ConnectionError)


def status_name(code: int) -> str:
    try:
        return ua.StatusCode(code).name
    except Exception:
        return f"0x{code:08X}"


def error_text(exc: BaseException) -> str:
    """A one-line reason for a comm alarm; never includes secrets (exceptions carry none here)."""
    if isinstance(exc, ua.UaStatusCodeError):
        return f"{type(exc).__name__} ({status_name(exc.code)})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


@dataclass
class Stats:
    """Counters a supervisor (or a test) can read; none of them is ever reset."""

    samples: int = 0
    batches: int = 0
    server_overflows: int = 0  # notifications that carried the Overflow info bit
    client_overflows: int = 0  # samples dropped because the client-side buffer was full
    missed_messages: int = 0  # notification messages never received (sequence-number gaps)
    bad_items: int = 0  # monitored items the server refused
    filters_refused: int = 0  # deadbands the server refused; those items run without one
    connects: int = 0
    reconnects: int = 0


def columns(dvs: Sequence[ua.DataValue], now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value float64, source time float64, status uint32) for decoded DataValues.

    The source timestamp is used when the server sent one, else the server timestamp, else the
    time of reception. Non-numeric values become NaN; their status is then forced to Bad.
    """
    n = len(dvs)
    raw = [dv.Value.Value if dv.Value is not None else None for dv in dvs]
    status = np.fromiter(
        (dv.StatusCode.value if dv.StatusCode is not None else 0 for dv in dvs), dtype=np.uint32, count=n
    )
    ts = np.fromiter(
        (
            (dv.SourceTimestamp or dv.ServerTimestamp).timestamp()
            if (dv.SourceTimestamp or dv.ServerTimestamp) is not None
            else now
            for dv in dvs
        ),
        dtype=np.float64,
        count=n,
    )
    try:
        values = np.array(raw, dtype=np.float64)
        if values.shape != (n,):
            raise ValueError("not scalar")
    except (TypeError, ValueError, OverflowError):
        values = np.empty(n, dtype=np.float64)
        for i, v in enumerate(raw):
            try:
                values[i] = float(v)
            except (TypeError, ValueError, OverflowError):
                values[i] = math.nan
                if v is not None:  # a string or array where a number was expected
                    status[i] = max(int(status[i]), ua.StatusCodes.BadTypeMismatch)
    return values, ts, status


def quality_of(status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quality per status code, and which codes carry the server's Overflow bit."""
    quality = _SEVERITY_TO_QUALITY[(status >> 30).astype(np.intp)]
    overflow = ((status & _INFO_TYPE_MASK) == _INFO_TYPE_DATAVALUE) & ((status & _OVERFLOW_BIT) != 0)
    quality[overflow & (quality == GOOD)] = UNCERTAIN
    return quality, overflow


class SampleBuffer:
    """Notifications accumulated as arrays until the driver yields the next SampleBatch.

    Positions (the monitored items' client handles) are indices into the driver's tag list.
    The buffer is bounded: when full, the oldest chunk is dropped, counted, and the tags it held
    get UNCERTAIN quality on their next sample. ``lost`` marks the tags whose next sample must be
    UNCERTAIN (samples lost, or the item runs without the deadband the config asked for).
    """

    def __init__(self, n_tags: int, max_pending: int, stats: Stats):
        self.max_pending = max_pending
        self.stats = stats
        self.chunks: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]] = []
        self.pending = 0
        self.lost = np.zeros(n_tags, dtype=bool)
        self.ready = asyncio.Event()

    def add(self, pos: np.ndarray, values: np.ndarray, ts: np.ndarray, status: np.ndarray) -> None:
        if len(pos) == 0:
            return
        self.chunks.append((pos, values, ts, status))
        self.pending += len(pos)
        while self.pending > self.max_pending and len(self.chunks) > 1:
            old = self.chunks.pop(0)
            self.pending -= len(old[0])
            self.stats.client_overflows += len(old[0])
            self.lost[old[0]] = True
            log.warning("opcua: client buffer full (%d samples); dropped %d oldest", self.max_pending, len(old[0]))
        self.ready.set()

    def add_bad(self, pos: Sequence[int], status: int, now: float) -> None:
        n = len(pos)
        self.add(np.asarray(pos, dtype=np.int64), np.full(n, np.nan), np.full(n, now),
                 np.full(n, status, dtype=np.uint32))

    def mark_all_lost(self) -> None:
        self.lost[:] = True

    def drain(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None:
        self.ready.clear()
        if not self.chunks:
            return None
        if len(self.chunks) == 1:
            pos, values, ts, status = self.chunks[0]
        else:
            pos, values, ts, status = (np.concatenate(c) for c in zip(*self.chunks, strict=True))
        self.chunks = []
        self.pending = 0
        return pos, values, ts, status


class _TagSubscription(Subscription):
    """asyncua's Subscription (creation, monitored items, deletion) with the notification path
    replaced: each PublishResponse goes straight into the driver's SampleBuffer."""

    def __init__(self, session: Any, params: ua.CreateSubscriptionParameters, driver: OpcUaDriver):
        super().__init__(session, params, handler=None, queue_maxsize=1)
        self._driver = driver
        self._seq: tuple[int | None, int | None] = (None, None)
        self.retired = False  # set when the driver has given up this session

    async def publish_callback(self, publish_result: ua.PublishResult) -> None:
        self.last_publish_at = time.monotonic()
        if self.retired:
            return
        msg = publish_result.NotificationMessage
        if not msg.NotificationData:
            return  # keep-alive: carries the next sequence number without using it
        seq = int(msg.SequenceNumber)
        sub_id, last = self._seq
        if sub_id == self.subscription_id and last is not None and seq > last + 1:
            self._driver.messages_missed(seq - last - 1)
        if sub_id != self.subscription_id or last is None or seq > last:
            self._seq = (self.subscription_id, seq)
        self.last_sequence_number = seq
        for notification in msg.NotificationData:
            if isinstance(notification, ua.DataChangeNotification):
                self._driver.data_changed(notification.MonitoredItems)
            elif isinstance(notification, ua.StatusChangeNotification):
                self._driver.subscription_status(notification.Status)


class OpcUaDriver(PollingDriver):
    """OPC-UA client for one device: ``mode = "subscribe"`` (default) or ``"poll"``."""

    name = "opcua"
    schemes = ("opc.tcp",)
    device_keys = config.DEVICE_KEYS
    tag_keys = config.TAG_KEYS

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

    def __init__(self, device: DeviceSpec, tags: Sequence[TagSpec]):
        super().__init__(device, tags)
        opts, problems = config.parse(device, tags)
        if opts is None or problems:
            raise ValueError("; ".join(f"{p.key}: {p.message}" for p in problems))
        self.opts: config.DeviceOptions = opts
        self.stats = Stats()
        self.scale = np.array([t.scale for t in self.tags], dtype=np.float64)
        self.offset = np.array([t.offset for t in self.tags], dtype=np.float64)
        self.buffer = SampleBuffer(len(self.tags), opts.max_pending_samples, self.stats)
        self.client: Client | None = None
        self._sub: _TagSubscription | None = None
        self._lost_reason: str | None = None
        self._nodes: list[Any] = []
        self._refused: dict[int, int] = {}
        # tag name -> status name, for the tags whose deadband the server refused at the last connect
        self.filter_refusals: dict[str, str] = {}
        self._sub_lost = False
        self._orphans: list[Client] = []

    # ---------------------------------------------------------------- notifications

    def data_changed(self, items: Sequence[ua.MonitoredItemNotification]) -> None:
        n = len(items)
        pos = np.fromiter((it.ClientHandle for it in items), dtype=np.int64, count=n)
        values, ts, status = columns([it.Value for it in items], time.time())
        self.stats.samples += n
        self.buffer.add(pos, values, ts, status)

    def messages_missed(self, count: int) -> None:
        self.stats.missed_messages += count
        self.buffer.mark_all_lost()
        log.warning("opcua %s: %d notification message(s) missing from the sequence", self.device.name, count)

    def subscription_status(self, status: ua.StatusCode) -> None:
        # The subscription ended (server timeout or shutdown, or the link dropped): the stream
        # reports the outage and the connection loop builds a new session and subscription.
        if not status.is_good():
            self._sub_lost = True
            self._lost_reason = self._lost_reason or f"subscription ended ({status.name}); reconnecting"
            self.buffer.ready.set()

    def items_refused(self, positions: Sequence[int], code: int) -> None:
        if not positions:
            return
        for p in positions:
            self._refused[p] = code
        self.stats.bad_items += len(positions)
        self.buffer.add_bad(list(positions), code, time.time())

    # ---------------------------------------------------------------- connection

    def _new_client(self) -> Client:
        # at least a few seconds per request: creating thousands of monitored items takes time
        # on small PLC servers, and a too-short timeout would turn that into a reconnect loop
        timeout = max(self.opts.timeout_s, 5.0)
        # asyncua's watchdog reads ServerStatus every interval and drops the connection when one
        # read takes longer than the interval. On a busy gateway that read waits behind large
        # publish responses, so it gets as long as the subscription's own staleness bound: a dead
        # link is found by that bound or by the socket, not by one slow read.
        return Client(self.opts.url, timeout=timeout, watchdog_intervall=self._stale_after(),
                      reconnect_max_delay=self.opts.reconnect_max_s)

    async def _open(self) -> Client:
        """A new connected client with a new session, after closing any session left behind."""
        await self._reclaim_orphans()
        client = self._new_client()
        try:
            await security.apply(client, self.opts)
            client.connection_lost_callback = self._connection_lost
            await client.connect(auto_reconnect=False)
        except BaseException:
            with contextlib.suppress(Exception):
                await client.disconnect()
            raise
        self.stats.connects += 1
        self._nodes = [client.get_node(t.node_id) for t in self.opts.tags]
        return client

    async def _reclaim_orphans(self) -> None:
        """Close the sessions of clients whose link was lost.

        A server keeps a session (and its subscription) alive for a while after its connection
        drops, waiting for the client to come back. Before a new session is created, the old one
        is taken over on a new secure channel (ActivateSession with its token) and closed, so the
        server never holds more than one session of this driver. When the server no longer
        knows the session (it restarted), there is nothing to close.
        """
        while self._orphans:
            old = self._orphans[-1]
            try:
                await asyncio.wait_for(self._close_orphan(old), max(self.opts.timeout_s, 2.0) * 2)
            except (ua.UaStatusCodeError, ua.UaError):
                pass  # the server does not know the session any more
            except CONNECT_ERRORS:
                with contextlib.suppress(Exception):
                    old.disconnect_socket()
                raise  # still unreachable: keep the orphan for the next attempt
            self._orphans.pop()
            with contextlib.suppress(Exception):
                old.disconnect_socket()

    async def _close_orphan(self, old: Client) -> None:
        old.disconnect_socket()
        await old.connect_socket()
        await old.send_hello()
        await old.open_secure_channel()
        old.uaclient.session.rebind_authentication_token()
        password = security.read_secret(self.opts.password_file) if self.opts.password_file else None
        await old.activate_session(username=self.opts.username, password=password)
        await old.uaclient.close_session(True)
        with contextlib.suppress(Exception):
            await old.close_secure_channel()

    async def _connection_lost(self, exc: Exception) -> None:
        self._lost_reason = f"connection lost ({error_text(exc)}); reconnecting"
        self.buffer.ready.set()

    async def _subscribe(self, client: Client) -> _TagSubscription:
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = self.opts.publishing_interval_ms
        # a keep-alive at least every ~2 s lets a dead subscription be noticed quickly; the
        # server keeps the subscription through six missed keep-alives (spec: at least three)
        params.RequestedMaxKeepAliveCount = self._keepalive_count()
        params.RequestedLifetimeCount = params.RequestedMaxKeepAliveCount * 6
        params.MaxNotificationsPerPublish = 0  # no limit: the server sends what it has
        params.PublishingEnabled = True
        params.Priority = 0
        sub = _TagSubscription(client.uaclient.session, params, self)
        await sub.init()
        self.filter_refusals = {}
        sub.last_publish_at = time.monotonic()
        requests = [self._item_request(i, t) for i, t in enumerate(self.opts.tags)]
        step = self.opts.batch_size
        for start in range(0, len(requests), step):
            chunk = requests[start:start + step]
            results = await sub.create_monitored_items(chunk)
            retry = []
            for req, res in zip(chunk, results, strict=True):
                if isinstance(res, ua.StatusCode):
                    pos = req.RequestedParameters.ClientHandle
                    if res.value in _FILTER_REJECTED:
                        log.warning("opcua %s: the server refused the deadband of tag %s (%s): %s; "
                                    "monitoring it without a deadband", self.device.name, self.tags[pos].name,
                                    self.tags[pos].address, res.name)
                        self.stats.filters_refused += 1
                        self.filter_refusals[self.tags[pos].name] = res.name
                        # the tag's first sample is UNCERTAIN: it is not monitored as configured
                        self.buffer.lost[pos] = True
                        retry.append(self._item_request(pos, self.opts.tags[pos], with_filter=False))
                    else:
                        log.warning("opcua %s: tag %s (%s) refused: %s", self.device.name,
                                    self.tags[pos].name, self.tags[pos].address, res.name)
                        self.items_refused([pos], res.value)
            if retry:
                for req, res in zip(retry, await sub.create_monitored_items(retry), strict=True):
                    if isinstance(res, ua.StatusCode):
                        self.items_refused([req.RequestedParameters.ClientHandle], res.value)
        return sub

    def _keepalive_count(self) -> int:
        return max(3, math.ceil(KEEPALIVE_S * 1000.0 / max(self.opts.publishing_interval_ms, 1.0)))

    def _stale_after(self) -> float:
        """Seconds without any publish response (data or keep-alive) after which the link is dead."""
        keepalive = self._keepalive_count() * self.opts.publishing_interval_ms / 1000.0
        return 2.0 * keepalive + max(self.opts.timeout_s, 1.0)

    def _item_request(self, pos: int, tag: config.TagOptions, with_filter: bool = True) -> ua.MonitoredItemCreateRequest:
        rv = ua.ReadValueId()
        rv.NodeId = tag.node_id
        rv.AttributeId = ua.AttributeIds.Value
        mp = ua.MonitoringParameters()
        mp.ClientHandle = pos
        mp.SamplingInterval = tag.sampling_interval_ms
        mp.QueueSize = tag.queue_size
        mp.DiscardOldest = True
        if with_filter and (tag.deadband_abs is not None or tag.deadband_percent is not None):
            f = ua.DataChangeFilter()
            f.Trigger = ua.DataChangeTrigger.StatusValue
            if tag.deadband_abs is not None:
                f.DeadbandType = ua.DeadbandType.Absolute
                f.DeadbandValue = tag.deadband_abs
            else:
                f.DeadbandType = ua.DeadbandType.Percent
                f.DeadbandValue = tag.deadband_percent
            mp.Filter = f
        req = ua.MonitoredItemCreateRequest()
        req.ItemToMonitor = rv
        req.MonitoringMode = ua.MonitoringMode.Reporting
        req.RequestedParameters = mp
        return req

    async def _close_client(self) -> None:
        """Close the session (CloseSession, subscriptions deleted) or, when the link is down,
        keep the client so the next connection attempt can close its session."""
        client, self.client = self.client, None
        if self._sub is not None:
            self._sub.retired = True
            self._sub = None
        if client is None:
            return
        wait = max(self.opts.timeout_s, 2.0)
        protocol = client.uaclient.protocol
        if client.uaclient.state is UaClientState.CONNECTED and protocol is not None and not protocol.is_closed:
            try:
                await asyncio.wait_for(client.close_session(), wait)
                answered = not protocol.is_closed
            except Exception:  # no answer (a silent link): the server may still hold the session
                answered = False
            # asyncua's close_session also returns quietly when the transport closed under it:
            # only a CloseSession answered on a still open transport counts as closed
            if answered:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(client.close_secure_channel(), wait)
                client.disconnect_socket()
                return
        # stop asyncua's watchdog tasks of this client; its session is closed later
        client.uaclient.request_disconnect()
        with contextlib.suppress(Exception):
            await client.close_session()  # cancels the tasks; the request itself fails offline
        if client.uaclient.session.authentication_token.is_null():
            return
        self._orphans.append(client)

    # ---------------------------------------------------------------- batches

    def _batch(self, drained: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]) -> SampleBatch:
        pos, raw, ts, status = drained
        quality, overflow = quality_of(status)
        n_over = int(np.count_nonzero(overflow))
        if n_over:
            self.stats.server_overflows += n_over
            log.warning("opcua %s: server queue overflow on %d notification(s); samples were lost",
                        self.device.name, n_over)
        lost = self.buffer.lost
        if lost.any():
            hit = lost[pos]
            quality[hit & (quality == GOOD)] = UNCERTAIN
            lost[pos] = False
        value = raw * self.scale[pos] + self.offset[pos]
        value[quality >= BAD] = np.nan
        self.stats.batches += 1
        return SampleBatch(
            device=self.device.name,
            tag=self.tag_indices[pos],
            value=value,
            ts=ts,
            quality=quality,
            error=None,
        )

    def _failed(self, error: str) -> SampleBatch:
        return SampleBatch.failed(self.device.name, self.tag_indices, time.time(), error)

    def _delay(self, failures: int) -> float:
        return backoff_delay(failures, self.backoff_initial_s, self.opts.reconnect_max_s)

    async def batches(self) -> AsyncIterator[SampleBatch]:
        if self.opts.mode == "poll":
            async for batch in super().batches():
                yield batch
            return
        async for batch in self._subscription_batches():
            yield batch

    async def _subscription_batches(self) -> AsyncIterator[SampleBatch]:
        heartbeat = max(self.device.interval_s, self.opts.publishing_interval_ms / 1000.0)
        publish_s = self.opts.publishing_interval_ms / 1000.0
        failures = 0
        try:
            while True:
                # connect (with our own backoff and jitter until the first session exists)
                try:
                    self.client = await self._open()
                    self._sub = await self._subscribe(self.client)
                except CONNECT_ERRORS as exc:
                    failures += 1
                    error = error_text(exc)
                    log.warning("opcua %s: %s", self.device.name, error)
                    await self._close_client()
                    deadline = time.monotonic() + self._delay(failures)
                    while True:
                        yield self._failed(error)
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        await asyncio.sleep(min(left, heartbeat))
                    continue
                failures = 0
                self._lost_reason = None
                self._sub_lost = False
                async for batch in self._stream(heartbeat, publish_s):
                    yield batch
                failures = 1
                await self._close_client()
                await asyncio.sleep(self._delay(failures))
        finally:
            await self._close_client()

    async def _stream(self, heartbeat: float, publish_s: float) -> AsyncIterator[SampleBatch]:
        """Batches from the open subscription; returns (after a COMM_FAIL batch) once the link,
        the session or the subscription is lost."""
        assert self.client is not None and self._sub is not None
        client, sub = self.client, self._sub
        stale_after = self._stale_after()
        cleared = False
        next_flush = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError, asyncio.TimeoutError):
                await asyncio.wait_for(self.buffer.ready.wait(), heartbeat)
            wait = next_flush - time.monotonic()
            if wait > 0:  # at most one batch per publishing interval
                await asyncio.sleep(wait)
            next_flush = time.monotonic() + publish_s
            drained = self.buffer.drain()
            if drained is not None:
                yield self._batch(drained)
                cleared = True
            if client.uaclient.state is not UaClientState.CONNECTED:
                reason = self._lost_reason or "connection lost; reconnecting"
            elif self._sub_lost:
                reason = self._lost_reason or "subscription lost; reconnecting"
            elif time.monotonic() - (sub.last_publish_at or 0.0) > stale_after:
                # connected, yet neither data nor keep-alives arrive: the subscription is gone
                reason = f"no publish response for {stale_after:.0f} s; reconnecting"
            else:
                if not cleared:
                    # connected but nothing changed yet: an empty batch clears the comm alarm
                    yield SampleBatch.build(self.device.name, [], [], [], [], None)
                    cleared = True
                continue
            self._lost_reason = reason
            self.stats.reconnects += 1
            yield self._failed(reason)
            return

    # ---------------------------------------------------------------- poll mode (PollingDriver)

    async def connect(self) -> None:
        self._lost_reason = None
        try:
            self.client = await self._open()
        except (ua.UaError, ConnectionError) as exc:
            # PollingDriver retries on DriverError; asyncua's protocol errors are device faults too
            raise DriverError(error_text(exc)) from None

    async def disconnect(self) -> None:
        await self._close_client()

    async def read(self) -> SampleBatch:
        client = self.client
        if client is None or client.uaclient.state is not UaClientState.CONNECTED:
            raise DriverError(self._lost_reason or "not connected")
        now = time.time()
        step = self.opts.batch_size
        parts = []
        for start in range(0, len(self._nodes), step):
            params = ua.ReadParameters()
            params.TimestampsToReturn = ua.TimestampsToReturn.Both
            params.MaxAge = 0
            for node in self._nodes[start:start + step]:
                rv = ua.ReadValueId()
                rv.NodeId = node.nodeid
                rv.AttributeId = ua.AttributeIds.Value
                params.NodesToRead.append(rv)
            try:
                parts.extend(await asyncio.wait_for(client.uaclient.session.read(params), self.device.timeout_s * 2))
            except (ua.UaError, ConnectionError) as exc:
                raise DriverError(error_text(exc)) from None
        values, ts, status = columns(parts, now)
        pos = np.arange(len(parts), dtype=np.int64)
        return self._batch((pos, values, ts, status))

    async def close(self) -> None:
        await self._close_client()


__all__ = ["OpcUaDriver", "Stats", "columns", "quality_of", "COMM_FAIL"]
