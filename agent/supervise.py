"""Supervision of the agent's long-running work, and systemd's notify protocol.

Every device task, timer loop and uplink thread runs under a supervisor: an unexpected
exception is logged with its traceback, reported (the agent turns the report into the device's
``comm`` alarm or a ``gateway`` alarm) and the work is restarted after a backoff (1 s doubling
to 60 s, with jitter). Work that runs ``HEALTHY_S`` after a restart without failing again is
reported as recovered (the ``gateway`` alarm clears) and its backoff starts over. Work that
returns normally (a loop with nothing to do in this config) is not restarted.

``Notifier`` speaks the sd_notify protocol over the datagram socket named by ``NOTIFY_SOCKET``
(no systemd library): ``READY=1`` once the agent runs, ``WATCHDOG=1`` every half
``WATCHDOG_USEC`` from a task on the event loop (so a blocked loop stops the pings and systemd
restarts the agent), ``STOPPING=1`` when shutdown begins. Without ``NOTIFY_SOCKET`` it is silent.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from drivers.base import backoff_delay

log = logging.getLogger("plantwatch.agent")

BACKOFF_INITIAL_S = 1.0
BACKOFF_MAX_S = 60.0
HEALTHY_S = 30.0  # a restarted task running this long without failing has recovered

#: (name, exception) when work failed and is being restarted; (name, None) when it recovered
Report = Callable[[str, "BaseException | None"], None]


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class Supervisor:
    """Runs coroutines as tasks that are restarted with backoff when they raise."""

    def __init__(self, report: Report, initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S,
                 healthy_s: float = HEALTHY_S):
        self.report = report
        self.initial_s, self.max_s, self.healthy_s = initial_s, max_s, healthy_s
        self.restarts: dict[str, int] = {}  # task name -> restarts so far (for the status)

    def task(self, name: str, work: Callable[[], Awaitable[Any]],
             report: Report | None = None) -> asyncio.Task:
        """Start ``work()`` as a supervised task; ``report`` overrides the supervisor's own."""
        return asyncio.create_task(self._supervise(name, work, report or self.report), name=name)

    async def _supervise(self, name: str, work: Callable[[], Awaitable[Any]], report: Report) -> None:
        loop = asyncio.get_running_loop()
        failures = 0
        recovered: asyncio.TimerHandle | None = None
        while True:
            started = time.monotonic()
            try:
                await work()
                log.info("%s finished", name)
                return
            except asyncio.CancelledError:
                if recovered is not None:
                    recovered.cancel()
                raise
            except Exception as exc:
                if recovered is not None:
                    recovered.cancel()
                failures = 1 if time.monotonic() - started >= self.healthy_s else failures + 1
                delay = backoff_delay(failures, self.initial_s, self.max_s)
                self.restarts[name] = self.restarts.get(name, 0) + 1
                log.error("%s failed (%s); restart %d in %.1f s", name, _describe(exc), self.restarts[name], delay,
                          exc_info=exc)
                _safely(report, name, exc)
                await asyncio.sleep(delay)
                log.warning("%s: restarting", name)
                recovered = loop.call_later(self.healthy_s, _safely, report, name, None)


def _safely(report: Report, name: str, exc: BaseException | None) -> None:
    try:
        report(name, exc)
    except Exception:
        log.exception("%s: reporting its state failed", name)


def run_supervised(name: str, run: Callable[[], None], stop: threading.Event, report: Report,
                   initial_s: float = BACKOFF_INITIAL_S, max_s: float = BACKOFF_MAX_S,
                   healthy_s: float = HEALTHY_S) -> None:
    """A thread's body: ``run()`` until it returns, restarted after a backoff when it raises.
    Once ``stop`` is set, a failed ``run`` is tried once more (it flushes on the way out), no
    more. ``report`` is called on this thread."""
    failures = 0
    while True:
        started = time.monotonic()
        timer: threading.Timer | None = None
        if failures:
            timer = threading.Timer(healthy_s, _safely, (report, name, None))
            timer.daemon = True
            timer.start()
        try:
            run()
            return
        except Exception as exc:
            failures = 1 if time.monotonic() - started >= healthy_s else failures + 1
            delay = backoff_delay(failures, initial_s, max_s)
            log.error("%s failed (%s); restart in %.1f s", name, _describe(exc), delay, exc_info=exc)
            _safely(report, name, exc)
            if stop.is_set() and failures > 1:
                return
            stop.wait(delay)
            log.warning("%s: restarting", name)
        finally:
            if timer is not None:
                timer.cancel()


class Notifier:
    """sd_notify over ``NOTIFY_SOCKET``; every method is a no-op without it."""

    def __init__(self, env: Mapping[str, str] | None = None):
        env = os.environ if env is None else env
        path = env.get("NOTIFY_SOCKET", "")
        self.address = "\0" + path[1:] if path.startswith("@") else path  # '@': the abstract namespace
        self.watchdog_s: float | None = None
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if self.address and usec.isdigit() and int(usec) > 0 and (not pid or pid == str(os.getpid())):
            self.watchdog_s = int(usec) / 1e6
        self._sock: socket.socket | None = None
        self._warned = False

    def send(self, *fields: str) -> None:
        if not self.address:
            return
        try:
            if self._sock is None:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.sendto("\n".join(fields).encode(), self.address)
        except OSError as exc:
            if not self._warned:  # once: the service manager going away is not news every ping
                log.warning("sd_notify to %s failed: %s", self.address.replace("\0", "@"), exc)
                self._warned = True

    def ready(self, status: str = "") -> None:
        self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def stopping(self) -> None:
        self.send("STOPPING=1")

    async def watchdog(self) -> None:
        """Ping every half watchdog period from the event loop: a blocked loop stops the pings."""
        if self.watchdog_s is None:
            return
        while True:
            self.send("WATCHDOG=1")
            await asyncio.sleep(self.watchdog_s / 2)

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
