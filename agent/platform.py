"""The reference platform over HTTP(S) and TCP/TLS: takes provincial-profile messages as a
province's platform does, answers them, and can be told to fail.

A ``Platform`` listens on one URL (``http://``, ``https://``, ``tcp://``, ``tls://``) and hands
every message to a ``Receiver`` (the same de-duplication, gaps and presence as over MQTT).

- HTTP: a POST to the URL's path carries one message (the envelope, or the bare payload
  without one) or a JSON array of them (a batch). It is answered with the success document
  (default ``{"code":"200","msg":"ok"}``) when every message was taken, else 400 with the
  reason: a message that does not open with the profile's key is never acknowledged.
- TCP: a persistent connection; frames end with a delimiter (default newline) or start with a
  4-byte big-endian length. Each frame is one message and is answered, in the same framing, by
  ``{"dataId": <the envelope's {uuid} field>, **success}`` or an error with ``"code": "400"``.

``mode`` (settable at any time, e.g. by a test) makes it fail on purpose: ``error:NNN`` (HTTP
status NNN; over TCP, code "NNN"), ``wrong`` (2xx, but the success field does not match),
``stall`` (read the request, never answer). In every fault mode the messages are not taken.
"""

from __future__ import annotations

import json
import re
import socket
import socketserver
import ssl
import struct
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from agent.payloads import split_body
from agent.provincial import Profile, ProvincialError, uuid_field
from agent.receiver import Receiver

SCHEMES = ("http", "https", "tcp", "tls")
DEFAULT_SUCCESS = {"code": "200", "msg": "ok"}
FRAMINGS = ("delimiter", "length")
MAX_FRAME = 16 * 1024 * 1024
_MODE = re.compile(r"ok|wrong|stall|error:[45][0-9][0-9]")


def check_mode(mode: str) -> str:
    """``mode`` if it is one of ok, wrong, stall, error:NNN; else ValueError."""
    if not _MODE.fullmatch(mode):
        raise ValueError(f"unknown answer mode {mode!r}: ok, error:NNN (a 4xx or 5xx status, e.g. error:503), "
                         "wrong or stall")
    return mode


def wrong_answer(success: dict[str, Any]) -> dict[str, Any]:
    """The success document with its first field (the one a success rule looks at) changed."""
    if not success:
        return {"code": "500"}
    first = next(iter(success))
    return {**success, first: "500" if str(success[first]) != "500" else "501", "msg": "not accepted"}


class Platform:
    """One listener of the reference platform; ``start()`` binds it (port 0: a free one)."""

    def __init__(self, receiver: Receiver, url: str, *, cert_file: str | None = None, key_file: str | None = None,
                 mode: str = "ok", success: dict[str, Any] | None = None, framing: str = "delimiter",
                 delimiter: bytes = b"\n"):
        if receiver.profile is None:
            raise ValueError("the platform reads the provincial profile: the receiver needs one")
        parts = urlsplit(url)
        if parts.scheme not in SCHEMES:
            raise ValueError(f"{url}: the scheme must be one of {', '.join(s + '://' for s in SCHEMES)}")
        if parts.scheme in ("https", "tls") and not (cert_file and key_file):
            raise ValueError(f"{url}: {parts.scheme} needs a certificate and its key")
        if framing not in FRAMINGS or (framing == "delimiter" and not delimiter):
            raise ValueError(f"framing must be one of {', '.join(FRAMINGS)}, with a non-empty delimiter")
        self.receiver = receiver
        self.profile: Profile = receiver.profile
        self.scheme = parts.scheme
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 0
        self.path = parts.path or "/"
        self.mode = check_mode(mode)
        self.success = dict(DEFAULT_SUCCESS if success is None else success)
        self.framing = framing
        self.delimiter = delimiter
        self.id_field = uuid_field(self.profile.envelope)
        self.requests = 0  # HTTP requests or TCP frames read
        self.taken = 0  # messages taken (valid, answered with success)
        self.refused = 0  # requests or frames answered with a fault mode's error or a wrong code
        self.stalled = 0  # requests or frames read and never answered
        self.lock = threading.Lock()
        self._tls: ssl.SSLContext | None = None
        if self.scheme in ("https", "tls"):
            self._tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            self._tls.load_cert_chain(cert_file, key_file)
        self._closing = threading.Event()
        self._conns: set[socket.socket] = set()
        self._server: socketserver.TCPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        """The URL it listens on, with the port it bound."""
        path = self.path if self.scheme in ("http", "https") else ""
        return f"{self.scheme}://{self.host}:{self.port}{path}"

    def start(self) -> Platform:
        """Listen (again, after ``close``: on the same port, as a restarted platform would)."""
        self._closing.clear()
        handler = _HttpHandler if self.scheme in ("http", "https") else _TcpHandler
        server_class = _HttpServer if handler is _HttpHandler else _TcpServer
        server = server_class((self.host, self.port), handler)
        server.platform = self  # type: ignore[attr-defined]
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name=f"platform-{self.scheme}", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop listening and drop every connection (a sender sees the platform go away)."""
        self._closing.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        with self.lock:
            conns, self._conns = list(self._conns), set()
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._thread is not None:
            self._thread.join(5)
        self._server = None

    def __enter__(self) -> Platform:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the connections (handler threads) ------------------------------------------------------

    def _opened(self, conn: socket.socket) -> socket.socket:
        if self._tls is not None:
            conn = self._tls.wrap_socket(conn, server_side=True)  # the handshake in the handler's thread
        with self.lock:
            self._conns.add(conn)
        return conn

    def _closed(self, conn: socket.socket) -> None:
        with self.lock:
            self._conns.discard(conn)

    def _count(self, what: str, n: int = 1) -> None:
        with self.lock:
            setattr(self, what, getattr(self, what) + n)

    def stall(self) -> None:
        """Hold the request unanswered until the platform closes."""
        self._count("stalled")
        self._closing.wait()

    # --- the answers ------------------------------------------------------------------------------

    def answer_http(self, body: bytes) -> tuple[int, dict[str, Any]] | None:
        """Status and JSON answer of one POST body; None: stall."""
        self._count("requests")
        mode = self.mode
        if mode == "stall":
            return None
        if mode.startswith("error:"):
            self._count("refused")
            return int(mode[6:]), {"code": mode[6:], "msg": "error"}
        if mode == "wrong":
            self._count("refused")
            return 200, wrong_answer(self.success)
        messages = split_body(body)
        reasons = [why for m in messages if (why := self.receiver.feed_payload(m, f"{self.scheme} POST")) is not None]
        if reasons:
            return 400, {"code": "400", "msg": "; ".join(reasons)[:1000]}
        self._count("taken", len(messages))
        return 200, self.success

    def answer_frame(self, frame: bytes) -> dict[str, Any] | None:
        """The answer to one TCP frame; None: stall."""
        self._count("requests")
        try:
            envelope, _ = self.profile.unwrap(frame)
        except ProvincialError:
            envelope = {}
        data_id = str(envelope.get(self.id_field, "")) if self.id_field else ""
        mode = self.mode
        if mode == "stall":
            return None
        if mode.startswith("error:"):
            self._count("refused")
            return {"dataId": data_id, "code": mode[6:], "msg": "error"}
        if mode == "wrong":
            self._count("refused")
            return {"dataId": data_id, **wrong_answer(self.success)}
        why = self.receiver.feed_payload(frame, f"{self.scheme} frame")
        if why is not None:
            return {"dataId": data_id, "code": "400", "msg": why}
        self._count("taken")
        return {"dataId": data_id, **self.success}


class _HttpHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: a sender posts many requests on one connection
    server_version = "plantwatch-platform"

    def setup(self) -> None:
        self.request = self.server.platform._opened(self.request)
        super().setup()

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.platform._closed(self.request)

    def do_POST(self) -> None:
        platform: Platform = self.server.platform
        if urlsplit(self.path).path != platform.path:
            self._answer(404, {"code": "404", "msg": f"no such path: {self.path}"})
            return
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._answer(411, {"code": "411", "msg": "Content-Length required"})
            return
        body = self.rfile.read(length)
        answer = platform.answer_http(body)
        if answer is None:
            platform.stall()
            self.close_connection = True
            return
        self._answer(*answer)

    def _answer(self, status: int, doc: dict[str, Any]) -> None:
        data = json.dumps(doc, ensure_ascii=False).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        pass


class _HttpServer(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client gone mid-request, a failed TLS handshake: the sender's problem, not the platform's


class _TcpServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _TcpHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        platform: Platform = self.server.platform
        try:
            conn = platform._opened(self.request)
        except (OSError, ssl.SSLError):
            return
        try:
            frames = _Frames(conn, platform.framing, platform.delimiter)
            while not platform._closing.is_set():
                frame = frames.next()
                if frame is None:
                    return
                answer = platform.answer_frame(frame)
                if answer is None:
                    platform.stall()
                    return
                conn.sendall(frames.frame(json.dumps(answer, ensure_ascii=False).encode()))
        except (OSError, ssl.SSLError, ValueError):
            return
        finally:
            platform._closed(conn)
            try:
                conn.close()
            except OSError:
                pass


class _Frames:
    """Frames read off a stream, and answers framed the same way."""

    def __init__(self, conn: socket.socket, framing: str, delimiter: bytes):
        self.conn = conn
        self.framing = framing
        self.delimiter = delimiter
        self.buf = b""

    def _fill(self) -> bool:
        chunk = self.conn.recv(65536)
        self.buf += chunk
        if len(self.buf) > MAX_FRAME + 4:
            raise ValueError("frame too long")
        return bool(chunk)

    def next(self) -> bytes | None:
        """The next frame; None at the end of the stream."""
        if self.framing == "length":
            while len(self.buf) < 4:
                if not self._fill():
                    return None
            (size,) = struct.unpack(">I", self.buf[:4])
            if size > MAX_FRAME:
                raise ValueError("frame too long")
            while len(self.buf) < 4 + size:
                if not self._fill():
                    return None
            frame, self.buf = self.buf[4:4 + size], self.buf[4 + size:]
            return frame
        while True:
            while self.delimiter not in self.buf:
                if not self._fill():
                    return None
            frame, _, self.buf = self.buf.partition(self.delimiter)
            if frame.strip():  # blank lines between frames are keep-alives
                return frame

    def frame(self, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + data if self.framing == "length" else data + self.delimiter

