"""The local operator API: a tiny HTTP server on 127.0.0.1 only.

It lets the plant's own people (and ``plantwatch alarms|ack|shelve|unshelve``) see and act on
alarms, and lets a local Prometheus scrape the health metrics. It binds to loopback and
nothing else: acting on alarms from the network goes through the MQTT command topic, which is
off by default.

    GET  /alarms                     every known alarm with its flags
    GET  /status                     the status document
    GET  /metrics                    Prometheus text format
    POST /alarms/{id}/{op}           op: ack shelve unshelve suppress unsuppress out_of_service in_service
                                     body (JSON, optional): {"user": "", "comment": "", "duration_s": 600}
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import Any
from urllib.parse import unquote

log = logging.getLogger("plantwatch.api")

MAX_BODY = 16 * 1024


class LocalApi:
    def __init__(self, port: int, get: Callable[[str], tuple[int, str, bytes]],
                 post: Callable[[str, str, dict[str, Any]], tuple[int, dict[str, Any]]]):
        """``get(path) -> (status, content type, body)``; ``post(alarm_id, op, body) -> (status, doc)``."""
        self.port = port
        self._get = get
        self._post = post
        self.server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        log.info("local API on http://127.0.0.1:%d", self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, ctype, body = await asyncio.wait_for(self._handle(reader), 10)
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, ValueError) as exc:
            status, ctype, body = 400, "application/json", _json({"error": f"bad request: {exc}"})
        reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 409: "Conflict"}.get(status, "")
        head = (f"HTTP/1.1 {status} {reason}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                "Connection: close\r\n\r\n").encode()
        try:
            writer.write(head + body)
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    async def _handle(self, reader: asyncio.StreamReader) -> tuple[int, str, bytes]:
        request = (await reader.readline()).decode("latin-1").split()
        if len(request) != 3:
            raise ValueError("malformed request line")
        method, target, _ = request
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            if name.strip().lower() == "content-length":
                length = int(value.strip())
        if length > MAX_BODY:
            raise ValueError("body too large")
        raw = await reader.readexactly(length) if length else b""
        path = target.split("?", 1)[0]
        if method == "GET":
            return self._get(path)
        if method != "POST":
            return 405, "application/json", _json({"error": "only GET and POST"})
        parts = path.strip("/").split("/")
        if len(parts) != 3 or parts[0] != "alarms":
            return 404, "application/json", _json({"error": f"no such resource {path}"})
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            return 400, "application/json", _json({"error": "body is not JSON"})
        if not isinstance(body, dict):
            return 400, "application/json", _json({"error": "body must be a JSON object"})
        status, doc = self._post(unquote(parts[1]), parts[2], body)
        return status, "application/json", _json(doc)


def _json(doc: Any) -> bytes:
    return json.dumps(doc, ensure_ascii=False).encode()
