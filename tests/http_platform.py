"""A plain HTTPS platform of the test's own: certificates from a test CA, a real listening socket,
and answers the test chooses — success, 5xx, 4xx, 408, a 2xx without the success mark, or
accepting a request and never answering. It can be stopped and started again on its port."""

from __future__ import annotations

import collections
import json
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from agent.broker import free_port
from tests.faults.certs import CertificateAuthority

#: answer name -> (status, JSON body); "stall" never answers
ANSWERS = {
    "ok": (200, {"code": "200", "msg": "success"}),
    "5xx": (503, {"code": "503", "msg": "busy"}),
    "4xx": (400, {"code": "400", "msg": "unknown appid"}),
    "408": (408, {"code": "408", "msg": "request timeout"}),
    "429": (429, {"code": "429", "msg": "slow down"}),
    "wrong": (200, {"code": "500", "msg": "decrypt failed"}),
}


class Platform:
    def __init__(self, directory: Path, ca: CertificateAuthority | None = None, tls: bool = True):
        self.ca = ca or CertificateAuthority(directory / "platform-pki")
        self.tls = tls
        issued = self.ca.issue("platform", server=True)
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(str(issued.cert), str(issued.key))
        self.port = free_port()
        self.answer = "ok"  # what every request gets once ``script`` is used up
        self.script: collections.deque[str] = collections.deque()
        self.accepted: list[bytes] = []  # bodies answered with success, in arrival order
        self.requests: list[tuple[str, dict[str, str], bytes]] = []  # answer, headers, body of every request
        self.cond = threading.Condition()
        self.release = threading.Event()  # lets stalled requests go (closed unanswered)
        self.server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}/api/push"

    def start(self) -> Platform:
        platform = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # the status line and headers go in one write, the body in another: without this a
            # keep-alive client's delayed ACK holds every answer ~40 ms
            disable_nagle_algorithm = True

            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                answer = platform.next_answer(dict(self.headers), body)
                if answer == "stall":
                    platform.release.wait(60)
                    self.close_connection = True
                    return
                status, doc = ANSWERS[answer]
                out = json.dumps(doc).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(out)))
                self.end_headers()
                self.wfile.write(out)

            def log_message(self, *args) -> None:
                pass

        self.release.clear()
        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        if self.tls:
            server.socket = self.context.wrap_socket(server.socket, server_side=True)
        self.server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def next_answer(self, headers: dict[str, str], body: bytes) -> str:
        with self.cond:
            answer = self.script.popleft() if self.script else self.answer
            self.requests.append((answer, headers, body))
            if answer == "ok":
                self.accepted.append(body)
            self.cond.notify_all()
            return answer

    def wait(self, predicate, timeout: float) -> bool:
        with self.cond:
            return self.cond.wait_for(lambda: predicate(self), timeout)

    def seqs(self) -> list[int]:
        """The seq of every accepted alarm body (json profile), in arrival order."""
        with self.cond:
            docs = [json.loads(b) for b in self.accepted if b.startswith(b"{")]
        # alarms only: a status post names seqs too (its outbox's oldest unsent row), deeper down
        return [d["seq"] for d in docs if "seq" in d]
