"""A TCP proxy that can cut the link: agent -> proxy -> broker, for fault tests.

``cut()`` makes the link go silent the way a failed WAN link does: bytes in both directions
vanish, the sockets stay open (no FIN, no RST, so TCP itself notices nothing) and new
connections are accepted but never reach the broker. ``restore()`` forwards again; the
connections that lived through the cut are closed, since their byte streams have holes.
``drop()`` closes every connection at once (a NAT table flush, a router reboot).
"""

from __future__ import annotations

import selectors
import socket
import threading


class TcpProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1"):
        self.upstream = (upstream_host, upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.setblocking(False)
        self.port = self._listener.getsockname()[1]
        self._sel = selectors.DefaultSelector()
        self._sel.register(self._listener, selectors.EVENT_READ, None)
        self._peer: dict[socket.socket, socket.socket | None] = {}  # None: held silent (cut)
        self._lock = threading.Lock()
        self._cut = False
        self._condemned: set[socket.socket] = set()  # lived through a cut: closed on restore
        self._stop = threading.Event()
        self._wake_r, self._wake_w = socket.socketpair()
        self._sel.register(self._wake_r, selectors.EVENT_READ, "wake")
        self.accepted = 0
        self._pending: list = []  # (fn, done) to run on the proxy thread
        self._thread = threading.Thread(target=self._run, name="tcpproxy", daemon=True)

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> TcpProxy:
        self._thread.start()
        return self

    def cut(self) -> None:
        with self._lock:
            self._cut = True
            self._condemned = set(self._peer)

    def restore(self) -> None:
        with self._lock:
            self._cut = False
            doomed, self._condemned = self._condemned | {s for s, p in self._peer.items() if p is None}, set()
        self._call(lambda: [self._close(s) for s in doomed])

    def drop(self) -> None:
        self._call(lambda: [self._close(s) for s in list(self._peer)])

    def close(self) -> None:
        self._stop.set()
        self._wake_w.send(b"\0")
        self._thread.join(5)
        for s in list(self._peer):
            self._close(s)
        self._sel.close()
        self._listener.close()
        self._wake_r.close()
        self._wake_w.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    async def __aenter__(self) -> TcpProxy:  # beside asyncio servers in async tests
        return self.start()

    async def __aexit__(self, *exc) -> None:
        self.close()

    # --- the proxy thread ---------------------------------------------------------------------

    def _call(self, fn) -> None:
        """Run ``fn`` on the proxy thread (it alone touches the sockets) and wait for it."""
        done = threading.Event()
        with self._lock:
            self._pending = [*self._pending, (fn, done)]
        self._wake_w.send(b"\0")
        done.wait(5)

    def _close(self, sock: socket.socket) -> None:
        """Close both sides of sock's connection."""
        peer = self._peer.pop(sock, None)
        self._shut(sock)
        if peer is not None:
            self._peer.pop(peer, None)
            self._shut(peer)

    def _shut(self, sock: socket.socket) -> None:
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

    def _accept(self) -> None:
        try:
            client, _ = self._listener.accept()
        except BlockingIOError:
            return
        self.accepted += 1
        with self._lock:
            cut = self._cut
        if cut:
            self._peer[client] = None
            self._sel.register(client, selectors.EVENT_READ, None)
            return
        try:
            upstream = socket.create_connection(self.upstream, timeout=2)
        except OSError:
            client.close()
            return
        for s in (client, upstream):
            s.setblocking(True)
            s.settimeout(5)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._peer[client], self._peer[upstream] = upstream, client
        self._sel.register(client, selectors.EVENT_READ, None)
        self._sel.register(upstream, selectors.EVENT_READ, None)

    def _close_one(self, sock: socket.socket) -> None:
        """Close one side; its peer stays open and silent until restore() closes it."""
        peer = self._peer.pop(sock, None)
        self._shut(sock)
        if peer is not None:
            self._peer[peer] = None

    def _forward(self, sock: socket.socket) -> None:
        try:
            data = sock.recv(65536)
        except OSError:
            data = b""
        with self._lock:
            cut = self._cut
        if not data:
            # across a cut link a FIN or RST does not arrive either: the broker giving up on
            # the silent client must not tell the client
            if cut:
                self._close_one(sock)
            else:
                self._close(sock)
            return
        peer = self._peer.get(sock)
        if cut or peer is None:
            return  # the link is down: the bytes are lost
        try:
            peer.sendall(data)
        except OSError:
            self._close(sock)

    def _run(self) -> None:
        while not self._stop.is_set():
            for key, _ in self._sel.select(0.5):
                if key.data == "wake":
                    try:
                        self._wake_r.recv(4096)
                    except OSError:
                        pass
                elif key.fileobj is self._listener:
                    self._accept()
                elif key.fileobj in self._peer:
                    self._forward(key.fileobj)
            with self._lock:
                pending, self._pending = self._pending, []
            for fn, done in pending:
                fn()
                done.set()
