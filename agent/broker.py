"""Local MQTT brokers for the demo and the tests: mosquitto from the OS, else amqtt in-process.

mosquitto's default ``max_queued_messages 1000`` silently drops QoS 1 messages queued for a
slow subscriber even though the publisher got every PUBACK, so every broker started here sets
it to 0 (unlimited); docs/OPERATIONS.md tells operators to do the same.
"""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g} s") from None
            time.sleep(0.05)


def mosquitto_path() -> str | None:
    return shutil.which("mosquitto") or next(
        (p for p in ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto") if Path(p).exists()), None
    )


class Mosquitto:
    """A mosquitto process on a loopback port, with its own config; restartable on the same port."""

    def __init__(self, port: int | None = None, extra: str = "", workdir: Path | None = None, persistent: bool = False):
        """``persistent``: keep sessions and queued messages across restarts (saved every
        second, so even a SIGKILL loses at most the last second of session changes)."""
        exe = mosquitto_path()
        if exe is None:
            raise FileNotFoundError("mosquitto is not installed (apt-get install -y mosquitto)")
        self.exe = exe
        self.port = port or free_port()
        self._tmp = None if workdir else tempfile.TemporaryDirectory(prefix="pw-mosq-")
        self.dir = Path(workdir or self._tmp.name)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.conf = self.dir / "mosquitto.conf"
        self.log = self.dir / "mosquitto.log"
        self.extra = extra
        self.persistent = persistent
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def write_conf(self) -> None:
        listener = "" if "listener " in self.extra else f"listener {self.port} 127.0.0.1\nallow_anonymous true\n"
        self.conf.write_text(
            # as root mosquitto drops to user 'mosquitto', which cannot write our temp dirs
            f"user {getpass.getuser()}\n"
            "per_listener_settings false\n"
            f"{listener}"
            "max_queued_messages 0\n"
            "max_inflight_messages 0\n"
            + (f"persistence true\npersistence_location {self.dir}/\nautosave_interval 1\n" if self.persistent else "persistence false\n")
            + f"log_dest file {self.log}\n"
            "log_type error\nlog_type warning\nlog_type notice\nlog_type information\n"
            f"{self.extra}\n"
        )

    def start(self, wait: bool = True) -> Mosquitto:
        self.write_conf()
        self.proc = subprocess.Popen([self.exe, "-c", str(self.conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait:
            try:
                wait_port(self.port)
            except TimeoutError:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.poll() is not None else ""
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(f"mosquitto did not start on port {self.port}: {err}{log}") from None
        return self

    def wait_saved(self, timeout: float = 10.0) -> None:
        """Wait for the next autosave of a persistent broker to be complete on disk (sessions
        then survive a SIGKILL). mosquitto logs "Saving" before it writes the new file and
        renames it into place, so the rename is what counts."""
        db = self.dir / "mosquitto.db"

        def identity() -> tuple[int, int] | None:
            try:
                st = db.stat()
            except FileNotFoundError:
                return None
            return (st.st_ino, st.st_mtime_ns)

        before = identity()
        count = self.log.read_text(errors="replace").count("Saving in-memory database")
        deadline = time.monotonic() + timeout
        while (self.log.read_text(errors="replace").count("Saving in-memory database") <= count
               or identity() == before or identity() is None):
            if time.monotonic() > deadline:
                raise TimeoutError("the broker did not save its sessions")
            time.sleep(0.05)

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            (self.proc.kill if kill else self.proc.terminate)()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None

    def close(self) -> None:
        self.stop()
        if self._tmp is not None:
            self._tmp.cleanup()

    def __enter__(self) -> Mosquitto:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()


class AmqttBroker:
    """The pure-Python amqtt broker in a thread of its own: the demo's fallback."""

    def __init__(self, port: int | None = None):
        self.port = port or free_port()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._broker = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> AmqttBroker:
        self._thread = threading.Thread(target=self._run, name="amqtt", daemon=True)
        self._thread.start()
        self._ready.wait(20)
        if self._error is not None:
            raise RuntimeError(f"amqtt broker failed: {self._error}")
        wait_port(self.port)
        return self

    def _run(self) -> None:
        from amqtt.broker import Broker

        config = {
            "listeners": {"default": {"type": "tcp", "bind": f"127.0.0.1:{self.port}", "max_connections": 100}},
            "sys_interval": 0,
            "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
        }
        self._loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            self._broker = Broker(config)
            await self._broker.start()

        try:
            self._loop.run_until_complete(start())
        except BaseException as exc:  # reported by start()
            self._error = exc
            self._ready.set()
            return
        self._ready.set()
        self._loop.run_forever()

    def close(self) -> None:
        if self._loop is None or self._broker is None:
            return
        fut = asyncio.run_coroutine_threadsafe(self._broker.shutdown(), self._loop)
        with contextlib.suppress(Exception):
            fut.result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread:
            self._thread.join(10)

    stop = close


def local_broker(prefer_mosquitto: bool = True):
    """mosquitto when installed, else amqtt; started, on a free loopback port."""
    if prefer_mosquitto and mosquitto_path():
        return Mosquitto().start()
    return AmqttBroker().start()
