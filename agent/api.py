"""The operator API: HTTP on 127.0.0.1 (read-only unless a bearer token is shown) and on a Unix
socket (state changes, the OS user recorded as their author).

    GET  /alarms                     every known alarm with its flags
    GET  /status                     the status document
    GET  /metrics                    Prometheus text format
    GET  /, /console.js, /trend.js, /console.css  the web console (agent.webconsole); GET /events its updates
    GET  /trend?tag=NAME|model=NAME  a tag's or a model's trend (agent.trends); GET /trend/models
    POST /alarms/{id}/{op}           op: ack shelve unshelve suppress unsuppress out_of_service in_service
                                     body (JSON, optional): {"user": "", "comment": "", "duration_s": 600}

Who is acting is never taken from the request body:

- on the Unix socket (``api_socket``, mode 0660, group ``api_socket_group``) the kernel's peer
  credentials (SO_PEERCRED) give the uid of the process at the other end; its user name is the
  author (``via`` ``socket``);
- on the TCP port a POST needs ``Authorization: Bearer TOKEN`` with a token of ``api_token_file``
  (compared in constant time); the author is ``token:NAME`` (``via`` ``token``).

A ``user`` in the body is kept as ``claimed_user``: a name the author typed, not a proof. Every
TCP request whose Host is not the bound address (DNS rebinding), whose Origin is another site (a
browser page) or that came through a proxy is refused before it is looked at. Every refusal is
answered with a reason, logged and counted (``plantwatch_api_refused_total{reason}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import logging
import os
import pwd
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import unquote

log = logging.getLogger("plantwatch.api")

MAX_BODY = 16 * 1024
MAX_HEADERS = 64
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
           405: "Method Not Allowed", 409: "Conflict", 429: "Too Many Requests", 500: "Internal Server Error"}
PROXY_HEADERS = ("via", "forwarded", "x-forwarded-for", "x-forwarded-host", "x-forwarded-proto", "proxy-authorization",
                 "proxy-connection")
#: fields of a POST body that the URL fixes (or the agent does): a body may not name them
FIXED_FIELDS = ("op", "id", "plant", "schema")

Answer = tuple[int, str, bytes]
#: a GET route: its answer, or an awaitable of it when it takes a while (a read done off the loop)
Get = Callable[[str], Answer | Awaitable[Answer]]
Post = Callable[[str, str, dict[str, Any], dict[str, str]], tuple[int, dict[str, Any]]]
Events = Callable[[asyncio.StreamWriter], Any]
#: on every answer: no page of ours loads anything from elsewhere or is framed by another site
PAGE_HEADERS = ("Content-Security-Policy: default-src 'self'; frame-ancestors 'none'", "X-Frame-Options: DENY",
                "X-Content-Type-Options: nosniff", "Referrer-Policy: no-referrer")


class Refused(Exception):
    """A request refused before it reached the alarms: ``status``, ``reason`` (the metric label)."""

    def __init__(self, status: int, reason: str, text: str):
        super().__init__(text)
        self.status, self.reason = status, reason


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    #: header lines the answer carries besides the usual ones (a session cookie, say)
    reply_headers: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]


async def read_request(reader: asyncio.StreamReader) -> Request:
    line = (await reader.readline()).decode("latin-1").split()
    if len(line) != 3:
        raise Refused(400, "bad_request", "malformed request line")
    request = Request(line[0], line[1])
    while (raw := await reader.readline()) not in (b"\r\n", b"\n", b""):
        if len(request.headers) >= MAX_HEADERS:
            raise Refused(400, "bad_request", "too many header lines")
        name, _, value = raw.decode("latin-1").partition(":")
        request.headers[name.strip().lower()] = value.strip()
    try:
        length = int(request.headers.get("content-length", "0"))
    except ValueError:
        raise Refused(400, "bad_request", "Content-Length is not a number") from None
    if not 0 <= length <= MAX_BODY:
        raise Refused(400, "bad_request", f"body larger than {MAX_BODY} bytes")
    request.body = await reader.readexactly(length) if length else b""
    return request


def read_tokens(path: Path | None) -> dict[str, str]:
    """token -> name from ``api_token_file``: lines ``NAME TOKEN`` or ``TOKEN`` (named ``api``)."""
    if path is None:
        return {}
    tokens = {}
    for line in path.read_text().splitlines():
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        name, token = (words[0], words[1]) if len(words) >= 2 else ("api", words[0])
        tokens[token] = name
    return tokens


def token_name(presented: str, tokens: dict[str, str]) -> str | None:
    """The name of the token presented, compared in constant time against every token."""
    found = None
    for token, name in tokens.items():
        if hmac.compare_digest(presented.encode(), token.encode()) and len(token) >= 16:
            found = name
    return found


class _Server:
    """The HTTP handling both listeners share; ``identify`` decides who is asking."""

    def __init__(self, get: Get, post: Post, refused: Callable[[str], None], events: Events | None = None):
        self._get, self._post, self._refused, self._events = get, post, refused, events
        self.server: asyncio.AbstractServer | None = None

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        extra: list[str] = []
        try:
            request = await asyncio.wait_for(read_request(reader), 10)
            extra = request.reply_headers
            answer = await self.route(request, writer)
            if answer is None:  # a stream that held the connection until the page went
                return
            status, ctype, body = answer
        except Refused as exc:
            self._refused(exc.reason)
            log.warning("operator API: refused (%s): %s", exc.reason, exc)
            status, ctype, body = exc.status, "application/json", _json({"ok": False, "error": str(exc)})
            if exc.status == 401:
                extra.append("WWW-Authenticate: Bearer")
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            self._refused("bad_request")
            status, ctype, body = 400, "application/json", _json({"ok": False, "error": f"bad request: {exc}"})
        except Exception:  # a fault of ours, not of the request: answer, keep serving, say where
            log.exception("operator API: internal error")
            status, ctype, body = 500, "application/json", _json({"ok": False, "error": "internal error"})
        head = (f"HTTP/1.1 {status} {REASONS.get(status, '')}\r\nContent-Type: {ctype}\r\n"
                f"Content-Length: {len(body)}\r\n" + "".join(f"{h}\r\n" for h in (*extra, *PAGE_HEADERS)) +
                "Cache-Control: no-store\r\nConnection: close\r\n\r\n").encode()
        try:
            writer.write(head + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def route(self, request: Request, writer: asyncio.StreamWriter) -> tuple[int, str, bytes] | None:
        """The answer to ``request``, or None when it was a stream served here until it ended."""
        if self._events is not None and request.method == "GET" and request.path == "/events":
            self.check(request)
            await self._events(writer)  # holds the connection until the page goes
            return None
        return await self._handle(request, writer)

    def identify(self, request: Request, writer: asyncio.StreamWriter) -> dict[str, str]:
        """Who is asking, as recorded with a state change (``user``, ``via``): each listener proves
        it its own way (the socket's peer credentials, the port's bearer token)."""
        raise NotImplementedError(f"{type(self).__name__} names no way to identify its callers")

    def check(self, request: Request) -> None:
        """Refuse (raise Refused) what must not be looked at on this listener."""

    async def _handle(self, request: Request, writer: asyncio.StreamWriter) -> tuple[int, str, bytes]:
        self.check(request)
        if request.method == "GET":
            answer = self._get(request.target)  # with its query string
            return await answer if inspect.isawaitable(answer) else answer
        if request.method != "POST":
            return 405, "application/json", _json({"ok": False, "error": "only GET and POST"})
        parts = request.path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "alarms":
            return 404, "application/json", _json({"ok": False, "error": f"no such resource {request.path}"})
        actor = self.identify(request, writer)
        try:
            body = json.loads(request.body) if request.body else {}
        except ValueError:
            raise Refused(400, "bad_request", "body is not JSON") from None
        if not isinstance(body, dict):
            raise Refused(400, "bad_request", "body must be a JSON object")
        fixed = sorted(k for k in FIXED_FIELDS if k in body)
        if fixed:
            raise Refused(400, "body_fields", f"{', '.join(fixed)}: given by the URL, not the body")
        status, doc = self._post(unquote(parts[1]), unquote(parts[2]), body, actor)
        return status, "application/json", _json(doc)


class LocalApi(_Server):
    """HTTP on 127.0.0.1:``port``: reads for anyone on the gateway, state changes with a token."""

    def __init__(self, port: int, get: Get, post: Post, refused: Callable[[str], None] = lambda reason: None,
                 token_file: Path | None = None, events: Events | None = None):
        super().__init__(get, post, refused, events)
        self.port = port
        self.token_file = token_file

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("local API on http://127.0.0.1:%d (%s)", self.port,
                 "state changes with a bearer token" if self.token_file else "read-only")

    def check(self, request: Request) -> None:
        if not request.target.startswith("/") or any(h in request.headers for h in PROXY_HEADERS):
            raise Refused(403, "proxy", "requests through a proxy are refused: talk to 127.0.0.1 directly")
        hosts = {f"127.0.0.1:{self.port}", f"localhost:{self.port}"}
        if request.headers.get("host", "").lower() not in hosts:
            raise Refused(403, "host", f"Host {request.headers.get('host', '(none)')!r} is not this API "
                          f"(127.0.0.1:{self.port})")
        origin = request.headers.get("origin")
        if origin is not None and origin.lower() not in {f"http://{h}" for h in hosts}:
            raise Refused(403, "origin", f"Origin {origin!r} is another site")

    def identify(self, request: Request, writer: asyncio.StreamWriter) -> dict[str, str]:
        if self.token_file is None:
            raise Refused(403, "read_only", "this port is read-only (no api_token_file): use the Unix socket "
                          "(plantwatch ack|shelve|...)")
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not presented.strip():
            raise Refused(401, "no_token", "state changes need Authorization: Bearer <token of api_token_file>")
        try:
            tokens = read_tokens(self.token_file)  # read at each use: a rotated token counts at once
        except OSError as exc:
            raise Refused(403, "no_token", f"api_token_file cannot be read: {exc.strerror}") from None
        name = token_name(presented.strip(), tokens)
        if name is None:
            raise Refused(401, "bad_token", "the bearer token is not one of api_token_file")
        return {"user": f"token:{name}", "via": "token"}


class SocketApi(_Server):
    """HTTP on a Unix socket: the peer's OS user is the author of what it asks."""

    def __init__(self, path: Path, group: str, get: Get, post: Post,
                 refused: Callable[[str], None] = lambda reason: None):
        super().__init__(get, post, refused)
        self.path = path
        self.group = group

    async def start(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        _clear_stale(self.path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o117)  # the socket is born 0660: no moment where others may connect
        try:
            sock.bind(str(self.path))
        finally:
            os.umask(old)
        if self.group:
            import grp

            os.chown(self.path, -1, grp.getgrnam(self.group).gr_gid)
        os.chmod(self.path, 0o660)
        self.server = await asyncio.start_unix_server(self._serve, sock=sock)
        log.info("operator socket on %s (group %s)", self.path, self.group or "of the agent")

    async def close(self) -> None:
        await super().close()
        with contextlib.suppress(OSError):
            self.path.unlink()

    def check(self, request: Request) -> None:
        if "origin" in request.headers:
            raise Refused(403, "origin", f"Origin {request.headers['origin']!r}: no browser talks to this socket")

    def identify(self, request: Request, writer: asyncio.StreamWriter) -> dict[str, str]:
        return {"user": user_name(peer_uid(writer.get_extra_info("socket"))), "via": "socket"}


def peer_uid(sock: Any) -> int:
    """The uid of the process at the other end of a Unix socket (SO_PEERCRED)."""
    _, uid, _ = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))
    return uid


def user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid:{uid}"


def _clear_stale(path: Path) -> None:
    """Remove a socket left behind by an agent that died; refuse to replace anything else."""
    try:
        st = path.lstat()
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(st.st_mode):
        raise OSError(f"{path} exists and is not a socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(str(path))
    except OSError:
        path.unlink()  # nobody answers: left behind
        return
    finally:
        probe.close()
    raise OSError(f"{path}: another process answers on it (is another agent running?)")


def _json(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()
