"""The connection to one OPC-UA server: client creation with security, connect and disconnect,
and closing the sessions that lost links leave behind on the server.

The driver keeps its own connection loop (backoff with jitter; asyncua's auto-reconnect is off).
When the link is lost, the next attempt first takes over the old session on a new secure channel
and closes it, then creates a new session: the server never holds more than one session of this
driver.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState

from drivers.base import DriverError
from drivers.opcua import security
from drivers.opcua.buffer import Stats
from drivers.opcua.config import DeviceOptions
from drivers.opcua.decode import error_text
from drivers.opcua.guard import guard

KEEPALIVE_S = 2.0
CONNECT_ERRORS = (DriverError, OSError, TimeoutError, asyncio.TimeoutError, ua.UaError, ConnectionError)


def keepalive_count(opts: DeviceOptions) -> int:
    """Publishing intervals per keep-alive: a keep-alive at least every ~2 s lets a dead
    subscription be noticed quickly."""
    return max(3, math.ceil(KEEPALIVE_S * 1000.0 / max(opts.publishing_interval_ms, 1.0)))


def stale_after(opts: DeviceOptions) -> float:
    """Seconds without any publish response (data or keep-alive) after which the link is dead."""
    keepalive = keepalive_count(opts) * opts.publishing_interval_ms / 1000.0
    return 2.0 * keepalive + max(opts.timeout_s, 1.0)


class Session:
    """One device's client and session; ``client`` is None while there is none.

    ``on_lost(reason)`` is called (from asyncua's connection-lost callback) when the link drops.
    """

    def __init__(self, opts: DeviceOptions, stats: Stats, on_lost: Callable[[str], None]):
        self.opts = opts
        self.stats = stats
        self.on_lost = on_lost
        self.client: Client | None = None
        self._orphans: list[Client] = []

    @property
    def connected(self) -> bool:
        return self.client is not None and self.client.uaclient.state is UaClientState.CONNECTED

    def _new_client(self) -> Client:
        # at least a few seconds per request: creating thousands of monitored items takes time
        # on small PLC servers, and a too-short timeout would turn that into a reconnect loop
        timeout = max(self.opts.timeout_s, 5.0)
        # asyncua's watchdog reads ServerStatus every interval and drops the connection when one
        # read takes longer than the interval. On a busy gateway that read waits behind large
        # publish responses, so it gets as long as the subscription's own staleness bound: a dead
        # link is found by that bound or by the socket, not by one slow read.
        return guard(Client(self.opts.url, timeout=timeout, watchdog_intervall=stale_after(self.opts),
                            reconnect_max_delay=self.opts.reconnect_max_s))

    async def open(self) -> Client:
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
        self.client = client
        return client

    async def _connection_lost(self, exc: Exception) -> None:
        self.on_lost(f"connection lost ({error_text(exc)}); reconnecting")

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

    async def close(self) -> None:
        """Close the session (CloseSession, subscriptions deleted) or, when the link is down,
        keep the client so the next connection attempt can close its session."""
        client, self.client = self.client, None
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
