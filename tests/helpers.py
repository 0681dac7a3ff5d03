"""Helpers shared across the test suite: the plant code of the test configs, and the agent run
as systemd runs it (`plantwatch run CONFIG` in a child process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLANT = "640100000001"  # [agent] plant of tests.conftest.BASE_CONFIG


class AgentProcess:
    """`plantwatch run CONFIG` as systemd would run it."""

    def __init__(self, config: Path, log: Path):
        self.config = config
        self.log = log
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProcess:
        self._out = open(self.log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", str(self.config)],
                                     stdout=self._out, stderr=subprocess.STDOUT)
        return self

    def signal(self, sig: int) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.wait()

    def wait(self, timeout: float = 30) -> int:
        assert self.proc is not None
        try:
            rc = self.proc.wait(timeout)
        finally:
            self._out.close()
        return rc

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
            self._out.close()

    def output(self) -> str:
        return self.log.read_text(errors="replace")
