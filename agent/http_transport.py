"""The HTTP transport: each request is a POST of the encoded payload to the uplink's url, judged
by the platform's success rule ([provincial] success).

One persistent connection (HTTP/1.1 keep-alive), reopened after any error. HTTPS verifies the
platform's certificate and host name against the system's CAs or ``ca_file``; ``cert_file``
and ``key_file`` add a client certificate. Headers are templates ([provincial] headers)
rendered per request. Telemetry may be batched: with ``batch_max`` > 1 the body is a JSON
array of the payloads; alarms are always one per request.
"""

from __future__ import annotations

import base64
import http.client
import time
import uuid
from collections.abc import Mapping
from urllib.parse import urlsplit

from agent.config import UplinkSection
from agent.config.http import HttpRules
from agent.outbox import TELEMETRY
from agent.payloads import batch_body, rfc3339
from agent.sender import REFUSED, RETRY, SENT, Answer, tls_context
from agent.templates import render

#: 4xx answers that a later attempt may still pass: Request Timeout, Too Many Requests
RETRIED_4XX = (408, 429)


class HttpTransport:
    def __init__(self, cfg: UplinkSection, rules: HttpRules, values: Mapping[str, str] | None = None,
                 local_time=rfc3339):
        """``values`` fill the header placeholders (``appid``, ``appsecret``); ``{uuid}`` and
        ``{time}`` (``local_time(now)``) are made per request."""
        self.cfg = cfg
        self.rules = rules
        self.values = dict(values or {})
        self.local_time = local_time
        parts = urlsplit(cfg.url)
        self.path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        self.context = tls_context(cfg) if cfg.tls else None
        self.conn: http.client.HTTPConnection | None = None
        self.auth = ""
        if cfg.username:
            secret = cfg.password_file.read_text(encoding="utf-8").strip() if cfg.password_file else ""
            self.auth = "Basic " + base64.b64encode(f"{cfg.username}:{secret}".encode()).decode()

    def batch(self, lane: int) -> int:
        return self.cfg.batch_max if lane == TELEMETRY else 1

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def _connection(self) -> http.client.HTTPConnection:
        if self.conn is None:
            if self.context is not None:
                self.conn = http.client.HTTPSConnection(self.cfg.host, self.cfg.port, timeout=self.cfg.timeout_s,
                                                        context=self.context)
            else:
                self.conn = http.client.HTTPConnection(self.cfg.host, self.cfg.port, timeout=self.cfg.timeout_s)
        return self.conn

    def headers(self, body: bytes) -> dict[str, str]:
        values = {**self.values, "uuid": str(uuid.uuid4()), "time": self.local_time(time.time())}
        out = {"Content-Type": "application/json; charset=utf-8", "Content-Length": str(len(body))}
        if self.auth:
            out["Authorization"] = self.auth
        out.update({name: render(t, values) for name, t in self.rules.headers.items()})
        return out

    def body(self, lane: int, payloads: list[bytes]) -> bytes:
        if lane != TELEMETRY or self.cfg.batch_max <= 1:
            return payloads[0]
        return batch_body(payloads)

    def send(self, lane: int, payloads: list[bytes]) -> Answer:
        body = self.body(lane, payloads)
        headers = self.headers(body)
        fresh = self.conn is None
        try:
            status, answer = self._post(body, headers)
        except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
            self.close()
            if fresh:
                raise
            # the platform closed an idle keep-alive connection: one more try on a new one
            status, answer = self._post(body, headers)
        return self.judge(status, answer)

    def _post(self, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        conn = self._connection()
        try:
            conn.request("POST", self.path, body=body, headers=headers)
            resp = conn.getresponse()
            answer = resp.read()
        except http.client.HTTPException as exc:
            self.close()
            if isinstance(exc, http.client.RemoteDisconnected):
                raise
            raise OSError(f"bad HTTP answer: {type(exc).__name__}: {exc}") from None
        except OSError:
            self.close()
            raise
        if resp.will_close:
            self.close()
        return resp.status, answer

    def judge(self, status: int, answer: bytes) -> Answer:
        if self.rules.success.matches(status, answer):
            return Answer(SENT)
        text = answer[:200].decode("utf-8", "replace")
        if 400 <= status < 500 and status not in RETRIED_4XX:
            return Answer(REFUSED, f"HTTP {status}: {text}")
        if 200 <= status < 300:
            return Answer(RETRY, f"HTTP {status} without the success mark: {text}")
        return Answer(RETRY, f"HTTP {status}: {text}")
