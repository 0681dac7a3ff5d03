"""Helpers shared across the test suite: the plant code of the test configs, and the agent run
as systemd runs it (`plantwatch run CONFIG` in a child process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLANT = "640100000001"  # [agent] plant of tests.conftest.BASE_CONFIG


class AgentProcess:
    """`plantwatch run CONFIG` as systemd would run it."""

    def __init__(self, config: Path, log: Path, env: dict[str, str] | None = None):
        """``env``: the child's environment (default: this process's)."""
        self.config = config
        self.log = log
        self.env = env
        self.proc: subprocess.Popen | None = None

    def start(self) -> AgentProcess:
        self._out = open(self.log, "ab")  # noqa: SIM115 - closed in wait()
        self.proc = subprocess.Popen([sys.executable, "-m", "agent.cli", "run", str(self.config)],
                                     stdout=self._out, stderr=subprocess.STDOUT, env=self.env)
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


def run_agent_until(agent, done, timeout_s: float = 10.0) -> None:
    """Run an in-process ``agent.runtime.Agent`` on its own event loop until ``done()`` holds
    (or ``timeout_s`` passed), give it a moment more, then stop it the way SIGTERM does."""
    import asyncio

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        for _ in range(int(timeout_s / 0.05)):
            await asyncio.sleep(0.05)
            if done():
                break
        await asyncio.sleep(0.2)
        stop.set()
        await task

    asyncio.run(run())


# a provincial platform's issued key and IV, and the two envelopes of docs/PROVINCES.md
KEY_HEX = "0123456789abcdeffedcba9876543210"
IV_HEX = "fedcba98765432100123456789abcdef"
GONGMAO = '{"appid":"{appid}","data":"{payload}"}'
TCP_ENVELOPE = ('{"appId":"{appid}","serviceId":"{service}","dataId":"{uuid}","districtCode":"{district}",'
                '"time":"{time14}","data":"{payload}"}')


def wrong_key(profile):
    """The same profile with another key: what a platform holding the wrong key decrypts with."""
    import dataclasses

    from agent.ciphers import PayloadCipher

    c = profile.cipher
    return dataclasses.replace(profile, cipher=PayloadCipher(c.name, key=bytes(16), iv=c.iv, encoding=c.encoding))
