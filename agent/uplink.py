"""The MQTT transport: publishes the outbox to the platform, alarms first, in order, QoS 1.

It runs in its own thread around one paho client per connection. A fresh client for every
connection matters: paho re-sends its own in-flight messages on reconnect, and the outbox is
the only queue we trust, so after a drop we restart from the oldest unsent row instead. The
receiver may then see a message twice (the same seq), never a gap or a reordering.

MQTT 5 adds, per message, user properties naming the schema and the plant (a platform can route
without parsing the payload) and, for telemetry only, a message expiry: a stale snapshot may be
dropped by the broker, an alarm never is. A dead link is found by the MQTT keepalive (PINGREQ
unanswered), not by TCP, which can take many minutes to notice a silent peer.
"""

from __future__ import annotations

import collections
import logging
import select
import socket
import sqlite3
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config import UplinkSection
from agent.encoding import RowEncoder, json_rows
from agent.outbox import ALARM, STATUS, TELEMETRY, Outbox, Row
from agent.payloads import ALARM_SCHEMA, STATUS_SCHEMA, TELEMETRY_SCHEMA, dumps, topic
from agent.supervise import Report, run_supervised
from agent.unnumbered import Encode, Unnumbered
from drivers.base import backoff_delay

# an MQTT will's payload has a 16-bit length; paho refuses to connect with a longer one
WILL_MAX = 65535

log = logging.getLogger("plantwatch.uplink")

_MARK_WAIT_S = 0.2  # for another connection's write lock, when marking rows sent


class Uplink:
    def __init__(
        self,
        cfg: UplinkSection,
        plant: str,
        outbox_path,
        status: Callable[[bool], dict[str, Any]],
        encode: Callable[[dict[str, Any]], bytes] = dumps,
        on_command: Callable[[bytes, bool], None] | None = None,
        rows: RowEncoder = json_rows,
        unnumbered: Encode | None = None,
    ):
        """``status(online)`` returns the status document to publish (retained), ``encode``
        turns it into the payload (the profile's), ``rows`` encodes a stored row in the profile.
        With ``on_command``, the uplink subscribes to ``{prefix}/{plant}/cmd`` and hands every
        message's payload to it, on its own thread. ``unnumbered`` encodes an alarm sent from
        memory (agent.unnumbered); None: this uplink sends none."""
        self.cfg = cfg
        self.name = cfg.name
        self.rows = rows
        self.memory = Unnumbered(cfg.name, unnumbered)
        self.alarm_topic = topic(cfg.topic_prefix, plant, "alarm")
        self.dead_letters = 0  # rows that could not be encoded (a broker never refuses a message for good)
        self.plant = plant
        self.outbox_path = outbox_path
        self.status = status
        self.encode = encode
        self.on_command = on_command
        self.status_topic = topic(cfg.topic_prefix, plant, "status")
        self.command_topic = topic(cfg.topic_prefix, plant, "cmd")
        self.connected = threading.Event()
        self.sent_count = 0
        self.connections = 0
        self.connect_failures = 0
        self.window = cfg.inflight  # QoS 1 messages in flight at most, on the current connection
        self.last_error = ""
        self.drops: collections.deque[str] = collections.deque(maxlen=50)  # why connections ended
        # (monotonic time, row id) of the alarms acknowledged lately, and those to publish again
        # first on the next connection (``resend_s``)
        self._acked: collections.deque[tuple[float, int]] = collections.deque(maxlen=100_000)
        self._resend: list[int] = []
        self.resent = 0
        self._stop = threading.Event()
        self._flush_until = 0.0
        self._announce = threading.Event()  # publish the status message at once
        self._unmarked: list[int] = []  # delivered rows not yet marked sent (the outbox refused the write)
        self._mark_error = ""
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._thread = threading.Thread(target=self._supervised, name=f"uplink:{cfg.name}", daemon=True)
        #: told (name, exception) when the thread fails and restarts, (name, None) when it recovered
        self.on_fault: Report = lambda name, exc: None
        self._password = cfg.password_file.read_text(encoding="utf-8").strip() if cfg.password_file else None

    # --- control (any thread) -----------------------------------------------------------------

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New rows are in the outbox: publish them now rather than at the next timeout."""
        try:
            self._wake_w.send(b"\0")
        except (BlockingIOError, OSError):
            pass

    def announce(self) -> None:
        """Publish the status message now rather than at the next heartbeat."""
        self._announce.set()
        self.wake()

    def stop(self, flush_s: float = 5.0) -> None:
        """Publish what is pending for up to ``flush_s``, then say offline and disconnect."""
        self._flush_until = time.monotonic() + flush_s
        self._stop.set()
        self.wake()
        self._thread.join(flush_s + 10)
        self._wake_r.close()
        self._wake_w.close()

    # --- the thread ---------------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        return backoff_delay(failures, self.cfg.backoff_initial_s, self.cfg.backoff_max_s)

    def _supervised(self) -> None:
        run_supervised(f"uplink {self.name}", self._run, self._stop, self.on_fault)

    def _run(self) -> None:
        outbox = Outbox(self.outbox_path, durable=False)
        # a mark that waits out another program's write lock would stall the session past its
        # keepalive: it fails at once instead and is retried with the next (``_mark``)
        outbox.wait_for_locks(_MARK_WAIT_S)
        failures = 0
        try:
            while not self._stop.is_set():
                client = self._client()
                try:
                    self._connect(client)
                except (OSError, ConnectionError, ssl.SSLError) as exc:
                    failures += 1
                    self.connect_failures += 1
                    self.last_error = f"{type(exc).__name__}: {exc}"
                    delay = self._backoff(failures)
                    log.warning("uplink: cannot connect to %s:%s (%s); retry in %.1f s", self.cfg.host, self.cfg.port, self.last_error, delay)
                    self._close(client)
                    self._stop.wait(delay)
                    continue
                failures = 0
                self.connections += 1
                self.connected.set()
                log.info("uplink: connected to %s:%s", self.cfg.host, self.cfg.port)
                try:
                    self._session(client, outbox)
                finally:
                    self.connected.clear()
                    self._close(client)
                if not self._stop.is_set():
                    self._dropped()
                    self.drops.append(self.last_error)
                    failures = 1
                    delay = self._backoff(failures)
                    log.warning("uplink: connection lost (%s); reconnect in %.1f s", self.last_error, delay)
                    self._stop.wait(delay)
        finally:
            outbox.close()

    def _client(self) -> mqtt.Client:
        v5 = self.cfg.mqtt_version == 5
        client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.cfg.client_id or f"plantwatch-{self.plant}",
            protocol=mqtt.MQTTv5 if v5 else mqtt.MQTTv311,
            clean_session=None if v5 else True,
        )
        # a dead link must be noticed within the keepalive, not after the OS's TCP timeouts
        client.connect_timeout = max(2.0, self.cfg.keepalive_s)
        client.max_inflight_messages_set(self.cfg.inflight)
        client.max_queued_messages_set(0)
        if self.cfg.username:
            client.username_pw_set(self.cfg.username, self._password)
        if self.cfg.tls:
            client.tls_set(
                ca_certs=str(self.cfg.ca_file) if self.cfg.ca_file else None,
                certfile=str(self.cfg.cert_file) if self.cfg.cert_file else None,
                keyfile=str(self.cfg.key_file) if self.cfg.key_file else None,
                cert_reqs=ssl.CERT_REQUIRED,
            )
        will = self.encode(self.status(False))
        if len(will) > WILL_MAX:  # every device's state of a large plant: the offline status without them
            will = self.encode({k: v for k, v in self.status(False).items() if k != "devices"})
        client.will_set(self.status_topic, will, qos=1, retain=True,
                        properties=self._properties(PacketTypes.WILLMESSAGE, STATUS_SCHEMA))
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_disconnect = self._on_disconnect
        client.user_data_set({"acked": [], "refused": [], "connack": None, "receive_max": 0})
        return client

    def _properties(self, packet: int, schema: str, expiry_s: float = 0.0) -> Properties | None:
        """MQTT 5 properties of a message: schema and plant as user properties, JSON content
        type and, when ``expiry_s`` > 0, a message expiry. None for MQTT 3.1.1."""
        if self.cfg.mqtt_version != 5:
            return None
        props = Properties(packet)
        props.UserProperty = [("schema", schema), ("plant", self.plant)]
        props.ContentType = "application/json"
        props.PayloadFormatIndicator = 1
        if expiry_s > 0:
            props.MessageExpiryInterval = max(1, int(round(expiry_s)))
        return props

    def _publish_properties(self) -> dict[int, Properties | None]:
        """Per lane; alarms never expire."""
        return {
            ALARM: self._properties(PacketTypes.PUBLISH, ALARM_SCHEMA),
            TELEMETRY: self._properties(PacketTypes.PUBLISH, TELEMETRY_SCHEMA, self.cfg.telemetry_expiry_s),
            STATUS: self._properties(PacketTypes.PUBLISH, STATUS_SCHEMA),
        }

    @staticmethod
    def _close(client: mqtt.Client) -> None:
        sock = client.socket()
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def _dropped(self) -> None:
        """The connection dropped: the alarms the broker acknowledged in the last ``resend_s``
        may have died with it (acknowledged before saved or forwarded): send them again."""
        since = time.monotonic() - self.cfg.resend_s
        again = sorted({rid for t, rid in self._acked if t >= since} | set(self._resend))
        self._acked.clear()
        if again and self.cfg.resend_s > 0:
            log.warning("uplink: %d alarm(s) acknowledged in the last %g s before the drop go again on the next "
                        "connection", len(again), self.cfg.resend_s)
            self._resend = again

    def _connect(self, client: mqtt.Client) -> None:
        sock_timeout = max(2.0, self.cfg.keepalive_s)
        keepalive = max(1, int(round(self.cfg.keepalive_s)))
        if self.cfg.mqtt_version == 5:
            props = Properties(PacketTypes.CONNECT)
            # the outbox, not the broker, holds what is unsent: a new connection starts clean,
            # and the session outlives a drop only as long as configured
            props.SessionExpiryInterval = int(self.cfg.session_expiry_s)
            client.connect(self.cfg.host, self.cfg.port, keepalive=keepalive, clean_start=True, properties=props)
        else:
            client.connect(self.cfg.host, self.cfg.port, keepalive=keepalive)
        sock = client.socket()
        if sock is None:
            raise ConnectionError("no socket after connect")
        deadline = time.monotonic() + sock_timeout
        ud = client.user_data_get()
        while ud["connack"] is None:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self._stop.is_set():
                raise ConnectionError("no CONNACK from the broker")
            r, w, _ = select.select([sock], [sock] if client.want_write() else [], [], min(remaining, 0.5))
            if r and client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise ConnectionError(f"connection closed during CONNECT ({self.last_error or 'refused'})")
            if w:
                client.loop_write()
        if ud["connack"] != 0:
            raise ConnectionError(f"broker refused the connection: {ud['connack']}")

    def _on_connect(self, client, ud, flags, reason_code, properties) -> None:
        ud["connack"] = 0 if not reason_code.is_failure else str(reason_code)
        if reason_code.is_failure:
            self.last_error = f"CONNACK {reason_code}"
        # an MQTT 5 broker disconnects a client that exceeds its Receive Maximum; paho does not
        # enforce it, so the window does
        receive_max = getattr(properties, "ReceiveMaximum", None) if properties is not None else None
        if receive_max:
            ud["receive_max"] = int(receive_max)

    def _on_publish(self, client, ud, mid, reason_code, properties) -> None:
        # an MQTT 5 PUBACK can refuse a message (not authorised, quota exceeded): it stays unsent
        if reason_code.is_failure:
            ud["refused"].append((mid, str(reason_code)))
        else:
            ud["acked"].append(mid)

    def _on_disconnect(self, client, ud, flags, reason_code, properties) -> None:
        if reason_code == 0:
            return
        if reason_code == "Keep alive timeout" and not flags.is_disconnect_packet_from_server:
            # paho's own keepalive check gave up on a silent link (found in loop_misc or on its
            # way out of it, whichever comes first)
            self.last_error = "keepalive timeout"
        else:
            self.last_error = f"disconnected: {reason_code}"

    def _session(self, client: mqtt.Client, outbox: Outbox) -> None:
        """Publish until the connection drops or we are told to stop (then flush)."""
        ud = client.user_data_get()
        inflight: dict[int, Row] = {}  # mid -> outbox row
        memory: dict[int, dict[str, Any]] = {}  # mid -> unnumbered alarm sent from memory
        last = {ALARM: 0, TELEMETRY: 0}
        props = self._publish_properties()
        client.publish(self.status_topic, self.encode(self.status(True)), qos=1, retain=True, properties=props[STATUS])
        if self.on_command is not None:
            client.on_message = lambda c, u, msg: self.on_command(msg.payload, bool(msg.retain))
            client.subscribe(self.command_topic, qos=1)
        next_status = time.monotonic() + self.cfg.heartbeat_s
        window = self.window = min(self.cfg.inflight, ud["receive_max"] or self.cfg.inflight)
        while True:
            # from memory, ahead of everything that needs the outbox
            if not self._from_memory(client, memory, window - len(inflight), props):
                return
            if ud["refused"]:
                mid, reason = ud["refused"][0]
                # the row stays unsent: reconnect (with backoff) and retry from the oldest unsent row
                self.last_error = f"broker refused message {mid}: {reason}"
                log.error("uplink: the broker refused a message (%s); it stays in the outbox", reason)
                return
            if ud["acked"] or self._unmarked:
                acked, ud["acked"] = ud["acked"], []
                rows = [inflight.pop(mid) for mid in acked if mid in inflight]
                self._mark(outbox, [r.id for r in rows])
                self.sent_count += len(rows)
                now = time.monotonic()
                self._acked.extend((now, r.id) for r in rows if r.lane == ALARM)
            stopping = self._stop.is_set()
            room = window - len(inflight) - len(memory)
            if room > 0 and not self._publish_pending(client, outbox, room, last, inflight, props, stopping):
                return
            if stopping:
                pending_alarms = bool(inflight) or bool(outbox.pending(ALARM, last[ALARM], 1, self.name))
                if not pending_alarms or time.monotonic() > self._flush_until:
                    self._goodbye(client)
                    return
            if time.monotonic() >= next_status or self._announce.is_set():
                self._announce.clear()
                client.publish(self.status_topic, self.encode(self.status(True)), qos=1, retain=True, properties=props[STATUS])
                next_status = time.monotonic() + self.cfg.heartbeat_s
            timeout = 0.05 if stopping else min(1.0, max(0.0, next_status - time.monotonic()))
            if not self._pump(client, timeout):
                return

    def _from_memory(self, client: mqtt.Client, memory: dict[int, dict[str, Any]], room: int,
                     props: dict) -> bool:
        """The unnumbered alarms (agent.unnumbered): take the broker's answers to those in flight
        (a refusal is final: no row stands behind them), then publish, QoS 1, the ones not yet in
        flight on this connection, within ``room``. False when a publish failed and the session
        must end."""
        ud = client.user_data_get()
        for mid, reason in [r for r in ud["refused"] if r[0] in memory]:
            ud["refused"].remove((mid, reason))
            self.memory.done(memory.pop(mid), refused=reason)
        for mid in [m for m in ud["acked"] if m in memory]:
            ud["acked"].remove(mid)
            self.memory.done(memory.pop(mid))
        flying = [id(d) for d in memory.values()]
        for doc in [d for d in self.memory.pending() if id(d) not in flying][:max(0, room - len(memory))]:
            try:
                payload = self.memory.encode(doc)
            except Exception as exc:  # a message that cannot be encoded must not stop the uplink
                self.memory.done(doc, refused=f"cannot encode: {type(exc).__name__}: {exc}")
                continue
            info = client.publish(self.alarm_topic, payload, qos=1, properties=props.get(ALARM))
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.last_error = f"publish failed: {info.rc}"
                return False
            memory[info.mid] = doc
        return True

    def _publish_pending(self, client: mqtt.Client, outbox: Outbox, room: int, last: dict[str, int],
                         inflight: dict[int, int], props: dict, stopping: bool) -> bool:
        """Up to ``room`` unsent rows, alarms before telemetry (none while stopping); False when
        a publish failed and the session must end."""
        resend = self._resend[:room]
        if resend:  # ahead of everything, and not moving the cursor
            del self._resend[:len(resend)]
            self.resent += len(resend)
            for row in outbox.rows(resend):
                payload = self.rows(row.lane, row.seq, row.payload, time.time())
                if payload is None:
                    continue
                info = client.publish(row.topic, payload, qos=row.qos, retain=row.retain, properties=props.get(row.lane))
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    self.last_error = f"publish failed: {info.rc}"
                    return False
                inflight[info.mid] = row
            return True
        rows = outbox.pending(ALARM, last[ALARM], room, self.name)
        if not rows and not stopping:
            rows = outbox.pending(TELEMETRY, last[TELEMETRY], room, self.name)
        for row in rows:
            try:
                payload = self.rows(row.lane, row.seq, row.payload, time.time())
            except Exception as exc:  # a row that cannot be encoded must not stop the uplink
                outbox.dead_letter([row], f"cannot encode: {type(exc).__name__}: {exc}", uplink=self.name)
                self.dead_letters += 1
                last[row.lane] = row.id
                continue
            if payload is None:  # not for this uplink's profile
                last[row.lane] = row.id
                self._mark(outbox, [row.id])
                continue
            info = client.publish(row.topic, payload, qos=row.qos, retain=row.retain, properties=props.get(row.lane))
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                self.last_error = f"publish failed: {info.rc}"
                return False
            last[row.lane] = row.id
            if row.qos:
                inflight[info.mid] = row
            else:
                self._mark(outbox, [row.id])
        return True

    def _mark(self, outbox: Outbox, ids: list[int]) -> None:
        """Mark delivered rows sent. While the outbox cannot be written (disk full, locked,
        read-only) the marks wait here and are tried again with the next ones; the session goes
        on (its cursor is past them). Should the agent stop first, those rows are sent again
        after the restart: a duplicate, never a loss."""
        self._unmarked += ids
        if not self._unmarked:
            return
        try:
            outbox.mark_sent(self._unmarked, uplink=self.name)
        except sqlite3.Error as exc:
            if not self._mark_error:
                log.error("uplink %s: cannot mark %d row(s) sent (%s); retried with the next", self.name,
                          len(self._unmarked), exc)
            self._mark_error = str(exc)
            return
        self._unmarked, self._mark_error = [], ""

    def _pump(self, client: mqtt.Client, timeout: float) -> bool:
        """Wait up to ``timeout`` for the socket or a wake-up, then let paho read, write and
        keep the connection alive; False when the connection is gone."""
        sock = client.socket()
        if sock is None:
            return False
        try:
            r, w, _ = select.select([sock, self._wake_r], [sock] if client.want_write() else [], [], timeout)
        except (OSError, ValueError):
            self.last_error = "socket closed"
            return False
        if self._wake_r in r:
            try:
                while self._wake_r.recv(4096):
                    pass
            except (BlockingIOError, OSError):
                pass
        if sock in r and client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.last_error = self.last_error or "connection lost"
            return False
        if sock in w and client.loop_write() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.last_error = "write failed"
            return False
        if client.loop_misc() != MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.last_error = "keepalive timeout"
            return False
        return True

    def _goodbye(self, client: mqtt.Client) -> None:
        """A clean stop: retained status says offline (the will is only for unclean ones)."""
        info = client.publish(self.status_topic, self.encode(self.status(False)), qos=1, retain=True,
                              properties=self._properties(PacketTypes.PUBLISH, STATUS_SCHEMA))
        deadline = time.monotonic() + 2.0
        sock = client.socket()
        while sock is not None and not info.is_published() and time.monotonic() < deadline:
            r, w, _ = select.select([sock], [sock] if client.want_write() else [], [], 0.1)
            if r and client.loop_read() != MQTTErrorCode.MQTT_ERR_SUCCESS:
                break
            if w:
                client.loop_write()
        client.disconnect()
        if client.socket() is not None:
            client.loop_write()
