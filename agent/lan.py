"""The console on the LAN (``[alarm_system] console_listen``): HTTPS only, every view behind a login.

Part of the shell. The same routes as the loopback API (agent.api) behind a TLS listener, with
one difference in who may look: on the loopback port anyone on the gateway may read; here only a
signed-in browser may read, and no request acts without a session and its CSRF token.

    GET  /, /console.js, /console.css   the page (no plant data in it): anyone
    GET  /session                       {"mode": "session", "user", "csrf", "expires"} or 401
    POST /login                         {"user", "password"} (console_users_file) or {"token"}
                                        (api_token_file): a session cookie
    POST /logout                        ends the session (and its live streams)
    everything else                     only with a live session; a POST also with X-CSRF-Token

The session cookie ``__Host-pw_session`` is ``HttpOnly; Secure; SameSite=Strict; Path=/``; the
session itself lives in the agent and ends ``console_session_s`` after the login whatever the
browser keeps. An unknown or expired cookie is no session. A request whose Origin is not this
listener's (``https://`` + its Host) is refused before it is looked at, as is one through a proxy.
Five failed logins from one address within a minute close the login to it for a minute.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import ssl
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.api import (
    PROXY_HEADERS,
    Events,
    Get,
    Post,
    Refused,
    Request,
    _json,
    _Server,
    read_tokens,
    token_name,
)
from agent.passwords import check_login, read_users
from agent.webconsole import FILES

log = logging.getLogger("plantwatch.api")

COOKIE = "__Host-pw_session"
PUBLIC = frozenset({*FILES, "/session"})  # the page's own files carry no plant data
MAX_SESSIONS = 256
FAILS, FAIL_WINDOW_S = 5, 60.0


@dataclass
class Session:
    user: str
    csrf: str
    expires: float
    streams: set[asyncio.Task[Any]] = field(default_factory=set)


def tls_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(cert, key)
    return ctx


class LanApi(_Server):
    """HTTPS on ``host:port`` with logins and sessions."""

    def __init__(self, host: str, port: int, tls: ssl.SSLContext, get: Get, post: Post,  # noqa: PLR0913
                 refused: Callable[[str], None] = lambda reason: None, *, users_file: Path | None = None,
                 token_file: Path | None = None, session_s: float = 28800.0, events: Events | None = None):
        super().__init__(get, post, refused, events)
        self.host, self.port, self.tls = host, port, tls
        self.users_file, self.token_file, self.session_s = users_file, token_file, session_s
        self.sessions: dict[str, Session] = {}
        self.failures: dict[str, deque[float]] = {}

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, self.host, self.port, ssl=self.tls)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("console on https://%s:%d (sign-in required)", self.host, self.port)

    # --- who is asking -----------------------------------------------------------------------
    def session(self, request: Request) -> Session | None:
        """The live session the request's cookie names, or None (an expired one is forgotten)."""
        sid = cookie(request.headers.get("cookie", ""), COOKIE)
        found = self.sessions.get(sid) if sid else None
        if found is not None and found.expires <= time.time():
            self.end(sid)
            return None
        return found

    def check(self, request: Request) -> None:
        self.gate(request)
        if request.method == "GET" and request.path in PUBLIC:
            return
        found = self.session(request)
        if found is None:
            raise Refused(401, "no_session", "sign in first (no session, or it has expired)")
        if request.method == "POST" and not secrets.compare_digest(
                request.headers.get("x-csrf-token", "").encode(), found.csrf.encode()):
            raise Refused(403, "csrf", "the request lacks this session's X-CSRF-Token")

    def gate(self, request: Request) -> None:
        """Refuse a request through a proxy, and one from a page of another origin."""
        if not request.target.startswith("/") or any(h in request.headers for h in PROXY_HEADERS):
            raise Refused(403, "proxy", "requests through a proxy are refused")
        host = request.headers.get("host", "")
        if not host:
            raise Refused(400, "host", "no Host header")
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() != f"https://{host.lower()}":
            raise Refused(403, "origin", f"Origin {origin!r} is another site")
        if request.method == "POST" and origin is None:
            raise Refused(403, "origin", "a state change must come from this console's page (no Origin)")

    def identify(self, request: Request, writer: asyncio.StreamWriter) -> dict[str, str]:
        found = self.session(request)
        if found is None:  # check() ran first; an expiry between the two is still a refusal
            raise Refused(401, "no_session", "sign in first (no session, or it has expired)")
        return {"user": found.user, "via": "login"}

    # --- routes of this listener --------------------------------------------------------------
    async def route(self, request: Request, writer: asyncio.StreamWriter) -> tuple[int, str, bytes] | None:
        if request.path == "/login" and request.method == "POST":
            self.gate(request)
            return await self.login(request, writer.get_extra_info("peername"))
        if request.path == "/logout" and request.method == "POST":
            self.check(request)
            self.end(cookie(request.headers.get("cookie", ""), COOKIE))
            request.reply_headers.append(f"Set-Cookie: {COOKIE}=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Strict")
            return 200, "application/json", _json({"ok": True})
        if request.path == "/session" and request.method == "GET":
            self.check(request)
            found = self.session(request)
            doc = {"mode": "session", "user": found.user if found else None,
                   "csrf": found.csrf if found else None, "expires": found.expires if found else None}
            return (200 if found else 401), "application/json", _json(doc)
        if request.path == "/events" and request.method == "GET" and self._events is not None:
            self.check(request)
            found = self.session(request)
            assert found is not None  # check() refused otherwise
            task = asyncio.current_task()
            if task is not None:
                found.streams.add(task)
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._events(writer), max(0.0, found.expires - time.time()))
            found.streams.discard(task)
            writer.close()
            return None
        return await super().route(request, writer)

    async def login(self, request: Request, peer: Any) -> tuple[int, str, bytes]:
        address = str(peer[0]) if isinstance(peer, tuple) else str(peer)
        now = time.time()
        if len(self.failures) > 4096:  # many addresses: forget the old failures rather than grow
            self.failures.clear()
        recent = self.failures.setdefault(address, deque(maxlen=FAILS))
        if len(recent) == FAILS and now - recent[0] < FAIL_WINDOW_S:
            raise Refused(429, "login_throttled", f"{FAILS} failed sign-ins from {address} within "
                          f"{FAIL_WINDOW_S:g} s: wait a minute")
        try:
            body = json.loads(request.body or b"{}")
        except ValueError:
            raise Refused(400, "bad_request", "body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "bad_request", "body must be a JSON object")
        user = await asyncio.to_thread(self._who, body)
        if user is None:
            recent.append(now)
            raise Refused(401, "bad_login", "wrong user name, password or token")
        self.failures.pop(address, None)
        sid, found = self.open(user, now)
        request.reply_headers.append(f"Set-Cookie: {COOKIE}={sid}; Path=/; Secure; HttpOnly; SameSite=Strict")
        log.info("console: %s signed in from %s", user, address)
        return 200, "application/json", _json({"ok": True, "user": user, "csrf": found.csrf, "expires": found.expires})

    def _who(self, body: dict[str, Any]) -> str | None:
        """The user a login body proves (``login:NAME`` or ``token:NAME``), or None. Runs off the loop."""
        if isinstance(body.get("token"), str) and body["token"]:
            try:
                name = token_name(body["token"], read_tokens(self.token_file))
            except OSError:
                return None
            return f"token:{name}" if name is not None else None
        user, password = body.get("user"), body.get("password")
        if not isinstance(user, str) or not isinstance(password, str) or self.users_file is None:
            return None
        try:
            users = read_users(self.users_file)  # read at each login: a removed user is out at once
        except (OSError, ValueError) as exc:
            log.error("console: %s", exc)
            return None
        return f"login:{user}" if check_login(users, user, password) else None

    def open(self, user: str, now: float) -> tuple[str, Session]:
        for sid in [s for s, v in self.sessions.items() if v.expires <= now]:
            self.end(sid)
        while len(self.sessions) >= MAX_SESSIONS:
            self.end(min(self.sessions, key=lambda s: self.sessions[s].expires))
        sid = secrets.token_urlsafe(32)
        self.sessions[sid] = found = Session(user, secrets.token_urlsafe(32), now + self.session_s)
        return sid, found

    def end(self, sid: str | None) -> None:
        found = self.sessions.pop(sid, None) if sid else None
        if found is not None:
            for task in found.streams:
                task.cancel()


def cookie(header: str, name: str) -> str | None:
    for part in header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value
    return None
