"""Helpers shared across the test suite: the plant code of the test configs, and the agent run
as systemd runs it (`plantwatch run CONFIG` in a child process)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PLANT = "640100000001"  # [agent] plant of tests.conftest.BASE_CONFIG


class NumberingSink:
    """Takes the place of the outbox in pipeline tests: numbers the alarm messages from 1."""

    def __init__(self):
        self.messages = []

    def append_alarms(self, topic, docs, now=None, encode=None, states=()):
        for d in docs:
            d["seq"] = len(self.messages) + 1
            self.messages.append(d)
        return [d["seq"] for d in docs]


def messages_of(receiver, alarm_id: str, state: str | None = None) -> list[dict]:
    """The alarm messages ``receiver`` took for ``alarm_id`` (in ``state`` when given), in arrival
    order. Other alarms are not in it: on a loaded machine a poll can time out, and the device's
    comm alarm comes and goes between the messages a test is about."""
    return [a for a in receiver.alarms if a["id"] == alarm_id and state in (None, a["state"])]


def wait_message(receiver, alarm_id: str, state: str, timeout: float = 30.0, nth: int = 0) -> dict:
    """The ``nth`` message of ``alarm_id`` in ``state``, once the receiver has it."""
    assert receiver.wait(lambda r: len(messages_of(r, alarm_id, state)) > nth, timeout), (
        f"no {state!r} message #{nth} of {alarm_id}", receiver.alarms)
    return messages_of(receiver, alarm_id, state)[nth]


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


def register_source_entry_points() -> Path | None:
    """The entry points pyproject.toml declares that the installed metadata lacks (an editable
    install made before they were added), registered for this test run: a dist-info of their own
    on sys.path and on the PYTHONPATH of the processes the tests start. Nothing when the install
    already has them all; the directory holding it otherwise."""
    import atexit
    import os
    import shutil
    import tempfile
    import tomllib
    from importlib.metadata import entry_points

    root = Path(__file__).resolve().parent.parent
    declared = tomllib.loads((root / "pyproject.toml").read_text(encoding="utf-8"))["project"]["entry-points"]
    missing = {group: {name: target for name, target in eps.items()
                       if name not in {ep.name for ep in entry_points(group=group)}}
               for group, eps in declared.items()}
    missing = {group: eps for group, eps in missing.items() if eps}
    if not missing:
        return None
    where = Path(tempfile.mkdtemp(prefix="plantwatch-entry-points-"))
    atexit.register(shutil.rmtree, where, ignore_errors=True)
    dist = where / "plantwatch_source_entry_points-0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: plantwatch-source-entry-points\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("".join(
        f"[{group}]\n" + "".join(f"{name} = {target}\n" for name, target in eps.items()) + "\n"
        for group, eps in missing.items()))
    sys.path.append(str(where))
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (os.environ.get("PYTHONPATH"), str(where)) if p)
    import detectors
    import drivers

    for module in (detectors, drivers):
        for fn in vars(module).values():
            if hasattr(fn, "cache_clear"):
                fn.cache_clear()
    return where
