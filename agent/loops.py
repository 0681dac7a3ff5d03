"""The health of the agent's timer loops (alarm clock, telemetry, provincial repeat, outbox
maintenance): each pass runs inside ``guard(name)``, so an error ends that pass only, never the
loop; the next pass is the retry.

Part of the shell. An error is logged with its traceback once per distinct error (type and
text) and loop, not once per pass; the loop's state, error count and last error are in the
status message (``loops``) and the local API.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from typing import Any

from agent.payloads import rfc3339

log = logging.getLogger("plantwatch.agent")


class LoopHealth:
    def __init__(self) -> None:
        self.loops: dict[str, dict[str, Any]] = {}
        self._logged: dict[str, str] = {}  # loop -> the last error logged with its traceback

    @contextlib.contextmanager
    def guard(self, name: str) -> Iterator[None]:
        """One pass of loop ``name``: an exception is recorded and logged, not raised."""
        try:
            yield
        except Exception as exc:
            self.failed(name, exc)
        else:
            self.ok(name)

    def ok(self, name: str) -> None:
        state = self.loops.get(name)
        if state is None or state["state"] != "ok":
            if state is not None:
                log.info("loop %s: running again after %d failed pass(es)", name, state["errors"])
            self.loops[name] = {"state": "ok", "errors": state["errors"] if state else 0,
                                "last_error": state["last_error"] if state else ""}

    def failed(self, name: str, exc: BaseException) -> None:
        text = f"{type(exc).__name__}: {exc}"
        old = self.loops.get(name, {"errors": 0})
        self.loops[name] = {"state": "failing", "errors": old["errors"] + 1, "last_error": text,
                            "since": old.get("since") or rfc3339(time.time())}
        if self._logged.get(name) != text:
            self._logged[name] = text
            log.error("loop %s failed (%s); it goes on, the next pass retries", name, text, exc_info=exc)

    def view(self) -> dict[str, dict[str, Any]]:
        return {k: dict(v) for k, v in self.loops.items()}
