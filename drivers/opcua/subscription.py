"""Subscribe mode: one subscription per device whose notifications become SampleBatches.

The server's notifications are turned into arrays straight from asyncua's decoded
PublishResponse, without asyncua's per-notification handler tasks or its bounded iterator queue
(which drops silently). Nothing is dropped without being counted: a server-side queue overflow
(the Overflow info bit of a value's StatusCode), a missing notification message (a gap in the
sequence numbers) and a full client-side buffer all increment ``stats`` and make the affected
tags' next samples UNCERTAIN.

While the device is unreachable, batches carry COMM_FAIL and an ``error`` text; the first batch
after recovery has ``error`` None.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import numpy as np
from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import Subscription

from drivers.base import DeviceSpec, SampleBatch, TagSpec, backoff_delay
from drivers.opcua import diagnose
from drivers.opcua.buffer import SampleBuffer, Stats
from drivers.opcua.config import DeviceOptions
from drivers.opcua.decode import columns, error_text
from drivers.opcua.items import create_items
from drivers.opcua.session import CONNECT_ERRORS, Session, keepalive_count, stale_after

log = logging.getLogger(__name__)

BACKOFF_INITIAL_S = 0.5


class TagSubscription(Subscription):
    """asyncua's Subscription (creation, monitored items, deletion) with the notification path
    replaced: each PublishResponse goes straight to the Subscriber."""

    def __init__(self, session: Any, params: ua.CreateSubscriptionParameters, sink: Subscriber):
        super().__init__(session, params, handler=None, queue_maxsize=1)
        self._sink = sink
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
            self._sink.messages_missed(seq - last - 1)
        if sub_id != self.subscription_id or last is None or seq > last:
            self._seq = (self.subscription_id, seq)
        self.last_sequence_number = seq
        for notification in msg.NotificationData:
            if isinstance(notification, ua.DataChangeNotification):
                self._sink.data_changed(notification.MonitoredItems)
            elif isinstance(notification, ua.StatusChangeNotification):
                self._sink.subscription_status(notification.Status)


class Subscriber:
    """The subscribe-mode half of the OPC-UA driver: owns the session and the subscription,
    rebuilds both after a loss, and yields the device's batches."""

    def __init__(self, device: DeviceSpec, tags: Sequence[TagSpec], tag_indices: np.ndarray,
                 opts: DeviceOptions, stats: Stats, buffer: SampleBuffer):
        self.device = device
        self.tags = list(tags)
        self.tag_indices = tag_indices
        self.opts = opts
        self.stats = stats
        self.buffer = buffer
        self.session = Session(opts, stats, self._link_lost)
        self.sub: TagSubscription | None = None
        self.lost_reason: str | None = None
        self.sub_lost = False
        # tag name -> status name, for the tags whose deadband the server refused at the last connect
        self.filter_refusals: dict[str, str] = {}
        self.refused_items: set[int] = set()  # positions of the items refused at the last connect
        self.revised_publishing_ms = 0.0  # the publishing interval the server granted

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
            self.sub_lost = True
            self.lost_reason = self.lost_reason or f"subscription ended ({status.name}); reconnecting"
            self.buffer.ready.set()

    def _link_lost(self, reason: str) -> None:
        self.lost_reason = reason
        self.buffer.ready.set()

    def _item_refused(self, pos: int, status: ua.StatusCode, retried: bool) -> None:
        if not retried:
            log.warning("opcua %s: tag %s (%s) refused: %s", self.device.name,
                        self.tags[pos].name, self.tags[pos].address, status.name)
        self.stats.bad_items += 1
        self.refused_items.add(pos)
        self.buffer.add_bad([pos], status.value, time.time())

    def _filter_refused(self, pos: int, status: ua.StatusCode) -> None:
        log.warning("opcua %s: the server refused the deadband of tag %s (%s): %s; "
                    "monitoring it without a deadband", self.device.name, self.tags[pos].name,
                    self.tags[pos].address, status.name)
        self.stats.filters_refused += 1
        self.filter_refusals[self.tags[pos].name] = status.name
        # the tag's first sample is UNCERTAIN: it is not monitored as configured
        self.buffer.lost[pos] = True

    # ---------------------------------------------------------------- connection

    async def _subscribe(self, client: Client) -> TagSubscription:
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = self.opts.publishing_interval_ms
        # a keep-alive at least every ~2 s lets a dead subscription be noticed quickly; the
        # server keeps the subscription through six missed keep-alives (spec: at least three)
        params.RequestedMaxKeepAliveCount = keepalive_count(self.opts)
        params.RequestedLifetimeCount = params.RequestedMaxKeepAliveCount * 6
        params.MaxNotificationsPerPublish = 0  # no limit: the server sends what it has
        params.PublishingEnabled = True
        params.Priority = 0
        sub = TagSubscription(client.uaclient.session, params, self)
        created = await sub.init()
        self.revised_publishing_ms = float(created.RevisedPublishingInterval)
        self.filter_refusals = {}
        self.refused_items = set()
        sub.last_publish_at = time.monotonic()
        await create_items(sub, self.opts.tags, self.opts.batch_size, self._item_refused, self._filter_refused)
        return sub

    def state(self) -> list[list[Any]]:
        """The subscription as the console's devices view shows it (rows of name, value)."""
        sub = self.sub
        if sub is None:
            return [["subscription", "none (not connected)"], ["monitored items", f"0 of {len(self.tags)}"]]
        age = time.monotonic() - sub.last_publish_at
        return [["subscription id", sub.subscription_id],
                ["publishing interval ms (asked, granted)",
                 f"{self.opts.publishing_interval_ms:g}, {self.revised_publishing_ms:g}"],
                ["monitored items", f"{len(self.tags) - len(self.refused_items)} of {len(self.tags)}"],
                ["last publish", f"{age:.1f} s ago"], ["last sequence number", sub.last_sequence_number]]

    async def close(self) -> None:
        if self.sub is not None:
            self.sub.retired = True
            self.sub = None
        await self.session.close()

    # ---------------------------------------------------------------- batches

    def _failed(self, error: str) -> SampleBatch:
        return SampleBatch.failed(self.device.name, self.tag_indices, time.time(), error)

    def _delay(self, failures: int) -> float:
        return backoff_delay(failures, BACKOFF_INITIAL_S, self.opts.reconnect_max_s)

    async def batches(self) -> AsyncIterator[SampleBatch]:
        heartbeat = max(self.device.interval_s, self.opts.publishing_interval_ms / 1000.0)
        publish_s = self.opts.publishing_interval_ms / 1000.0
        failures = 0
        try:
            while True:
                # connect (with our own backoff and jitter until the first session exists)
                try:
                    client = await self.session.open()
                    self.sub = await self._subscribe(client)
                except CONNECT_ERRORS as exc:
                    failures += 1
                    error = (error_text(exc) if self.stats.connects else
                             diagnose.never_connected(exc, self.opts, self.device.name))
                    log.warning("opcua %s: %s", self.device.name, error)
                    await self.close()
                    deadline = time.monotonic() + self._delay(failures)
                    while True:
                        yield self._failed(error)
                        left = deadline - time.monotonic()
                        if left <= 0:
                            break
                        await asyncio.sleep(min(left, heartbeat))
                    continue
                failures = 0
                self.lost_reason = None
                self.sub_lost = False
                async for batch in self._stream(client, self.sub, heartbeat, publish_s):
                    yield batch
                failures = 1
                await self.close()
                await asyncio.sleep(self._delay(failures))
        finally:
            await self.close()

    async def _stream(self, client: Client, sub: TagSubscription, heartbeat: float,
                      publish_s: float) -> AsyncIterator[SampleBatch]:
        """Batches from the open subscription; returns (after a COMM_FAIL batch) once the link,
        the session or the subscription is lost."""
        stale = stale_after(self.opts)
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
                yield self.buffer.batch(drained)
                cleared = True
            if client.uaclient.state is not UaClientState.CONNECTED:
                reason = self.lost_reason or "connection lost; reconnecting"
            elif self.sub_lost:
                reason = self.lost_reason or "subscription lost; reconnecting"
            elif time.monotonic() - (sub.last_publish_at or 0.0) > stale:
                # connected, yet neither data nor keep-alives arrive: the subscription is gone
                reason = f"no publish response for {stale:.0f} s; reconnecting"
            else:
                if not cleared:
                    # connected but nothing changed yet: an empty batch clears the comm alarm
                    yield SampleBatch.build(self.device.name, [], [], [], [], None)
                    cleared = True
                continue
            self.lost_reason = reason
            self.stats.reconnects += 1
            yield self._failed(reason)
            return
