"""The TCP transport: each message is one frame on a persistent connection (``tcp://``, or
``tls://`` verified like HTTPS), answered by the platform with a frame naming the message's id.

A message's id is the envelope's top-level "{uuid}" field (its dataId): the profile fills it
with a fresh UUID every time a row is encoded, so a message sent again after a failure is a
new message to the platform. The answer for it is the frame whose ``dataId`` (or, failing that,
the same field as the envelope's) carries that id; an answer for another id (a late answer to
a message given up on) is logged and skipped. No answer within ``timeout_s`` is a retry, on a
new connection: the platform may have half-read the old one.

An answer is judged by the success rule ([provincial] success; the HTTP status does not apply):
its ``field`` equal to ``equals``; a rule without a field means ``"code"`` equal to ``"200"``
(what the reference platform answers). Otherwise, the
answer's code (the rule's field, else ``code``) in the uplink's ``refused_codes`` means the
message will never be taken: REFUSED, dead-lettered. Anything else is retried.
"""

from __future__ import annotations

import json
import logging
import socket
import ssl
import struct
import time
from typing import Any

from agent.config import UplinkSection
from agent.config.http import SuccessRule
from agent.sender import REFUSED, RETRY, SENT, Answer, tls_context

log = logging.getLogger("plantwatch.uplink")

MAX_ANSWER = 1024 * 1024  # an answer frame longer than this is not an answer: the connection is reopened


class TcpTransport:
    def __init__(self, cfg: UplinkSection, success: SuccessRule, id_field: str):
        """``id_field``: the envelope's field holding the message id ("{uuid}")."""
        self.cfg = cfg
        self.success = success if success.field else SuccessRule(success.status, "code", "200")
        self.id_field = id_field
        self.code_field = self.success.field
        self.refused = frozenset(cfg.refused_codes)
        self.delimiter = cfg.delimiter.encode("utf-8")
        self.context = tls_context(cfg) if cfg.tls else None
        self.sock: socket.socket | None = None
        self.buf = b""

    def batch(self, lane: int) -> int:
        return 1  # one frame, one answer

    def close(self) -> None:
        if self.sock is not None:
            try:
                self.sock.close()
            except OSError:
                pass
            self.sock = None
        self.buf = b""

    def _connection(self) -> socket.socket:
        if self.sock is None:
            sock = socket.create_connection((self.cfg.host, self.cfg.port), timeout=self.cfg.timeout_s)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self.context is not None:
                try:
                    sock = self.context.wrap_socket(sock, server_hostname=self.cfg.host)
                except (OSError, ssl.SSLError):
                    sock.close()
                    raise
            self.sock, self.buf = sock, b""
        return self.sock

    def frame(self, data: bytes) -> bytes:
        if self.cfg.framing == "length":
            return struct.pack(">I", len(data)) + data
        return data + self.delimiter

    def message_id(self, payload: bytes) -> str:
        try:
            envelope = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            envelope = None
        if not isinstance(envelope, dict) or not envelope.get(self.id_field):
            raise ValueError(f"the message has no {self.id_field!r} field to match the answer by")
        return str(envelope[self.id_field])

    def send(self, lane: int, payloads: list[bytes]) -> Answer:
        try:
            data_id = self.message_id(payloads[0])
        except ValueError as exc:
            return Answer(REFUSED, str(exc))
        try:
            sock = self._connection()
            sock.sendall(self.frame(payloads[0]))
            deadline = time.monotonic() + self.cfg.timeout_s
            while True:
                answer = self._answer(sock, deadline)
                got = answer.get("dataId", answer.get(self.id_field))
                if str(got) == data_id:
                    return self.judge(answer)
                log.info("uplink %s: skipped an answer for another message (dataId %s, waiting for %s)",
                         self.cfg.name, got, data_id)
        except (OSError, ValueError) as exc:
            self.close()  # a timeout or a garbled stream: the next message goes on a new connection
            if isinstance(exc, OSError):
                raise
            return Answer(RETRY, f"bad answer: {exc}")

    def _answer(self, sock: socket.socket, deadline: float) -> dict[str, Any]:
        frame = self._frame(sock, deadline)
        doc = json.loads(frame)
        if not isinstance(doc, dict):
            raise ValueError(f"not a JSON object: {frame[:200]!r}")
        return doc

    def _frame(self, sock: socket.socket, deadline: float) -> bytes:
        while True:
            if self.cfg.framing == "length":
                if len(self.buf) >= 4:
                    (size,) = struct.unpack(">I", self.buf[:4])
                    if size > MAX_ANSWER:
                        raise ValueError(f"an answer frame of {size} bytes")
                    if len(self.buf) >= 4 + size:
                        frame, self.buf = self.buf[4:4 + size], self.buf[4 + size:]
                        return frame
            elif self.delimiter in self.buf:
                frame, _, self.buf = self.buf.partition(self.delimiter)
                if frame.strip():
                    return frame
                continue
            if len(self.buf) > MAX_ANSWER:
                raise ValueError("an answer longer than 1 MiB without a delimiter")
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"no answer within {self.cfg.timeout_s:g} s")
            sock.settimeout(left)
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                raise TimeoutError(f"no answer within {self.cfg.timeout_s:g} s") from None
            if not chunk:
                raise ConnectionResetError("the platform closed the connection")
            self.buf += chunk

    def judge(self, answer: dict[str, Any]) -> Answer:
        body = json.dumps(answer).encode()
        if self.success.matches(self.success.status, body):
            return Answer(SENT)
        code = answer.get(self.code_field)
        text = json.dumps(answer, ensure_ascii=False)[:200]
        if code is not None and str(code) in self.refused:
            return Answer(REFUSED, f"refused with code {code}: {text}")
        return Answer(RETRY, f"no success: {text}")
