"""Power cuts: every alarm the outbox reported committed is there after the restart.

A SIGKILL is not a power cut: the kernel's page cache survives it, so a commit that was written
but never synced still reaches the disk. Here the agent runs with an LD_PRELOAD shim
(tests/faults/powercut.c, built by the test with the system C compiler) that keeps, for every file
in data_dir, a copy of the file as it stood at its last fsync/fdatasync. The "cut" is a SIGKILL
followed by replacing data_dir's files with those copies (a file never synced, the -shm index
included, is gone): the disk as a power cut that lost every unsynced write leaves it. The agent
then starts on that disk.

The method is faithful for SQLite in WAL mode because SQLite makes a commit durable only by
syncing the WAL (synchronous=FULL: at every commit; NORMAL: only at checkpoints) and a checkpoint
by syncing the WAL, then the database; it writes a file only under the lock that orders those
syncs, so a copy taken right after a sync is exactly what it made durable. Names are treated
optimistically (a synced file exists, an unlink is durable at once): a journalling file system's
ordering of metadata, not a model of a disk that loses directory entries.

The agent logs ``alarm seq=N`` only after the commit returned: those are the alarms the outbox
reported committed. Three cuts at random moments while a PLC keeps alarming, then a restart:
every logged seq is in the outbox, seqs have no hole and the restarted agent numbers on from
the last one. The control run weakens ``PRAGMA synchronous`` to NORMAL (tests/faults/weaken) and
shows the same check finds alarms lost — the test fails when the setting is weakened.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.faults.helpers import Flipper, committed_seqs, plant_config, tag_addresses, wait_for
from tests.helpers import AgentProcess
from tests.modbus.server import start_server

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CUTS = 3


@pytest.fixture(scope="module")
def shim(tmp_path_factory) -> Path:
    so = tmp_path_factory.mktemp("powercut") / "powercut.so"
    subprocess.run(["cc", "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(so), str(HERE / "powercut.c"),
                    "-ldl", "-lpthread"], check=True, capture_output=True, text=True)
    return so


def arm(data: Path, shadow: Path) -> None:
    """The files in data_dir now are on the disk: they are the copies a cut goes back to."""
    shutil.rmtree(shadow, ignore_errors=True)
    shadow.mkdir()
    for f in data.rglob("*"):
        if f.is_file():
            shutil.copyfile(f, shadow / str(f.relative_to(data)).replace("/", "%"))


def cut(data: Path, shadow: Path) -> None:
    """The disk after the power cut: each file as at its last sync; never synced, gone."""
    for f in list(data.rglob("*")):
        if f.is_file():
            f.unlink()
    for copy in shadow.iterdir():
        if not copy.name.endswith(".partial"):
            target = data / copy.name.replace("%", "/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(copy, target)


def logged_seqs(log: Path) -> set[int]:
    return {int(s) for s in re.findall(r" alarm seq=(\d+) ", log.read_text(errors="replace"))}


def run_and_cut(config: Path, data: Path, shadow: Path, log: Path, env: dict[str, str], wait_s: float) -> set[int]:
    """One run of the agent ended by a power cut after ``wait_s``; the seqs it reported committed."""
    arm(data, shadow)
    agent = AgentProcess(config, log, env=env).start()
    try:
        assert wait_for(lambda: " running: plant " in agent.output(), 30), agent.output()
        time.sleep(wait_s)
    finally:
        agent.kill()
    cut(data, shadow)
    return logged_seqs(log)


def cut_env(shim: Path, data: Path, shadow: Path, **extra: str) -> dict[str, str]:
    path = os.pathsep.join([str(HERE / "weaken"), str(ROOT)])
    return {**os.environ, "LD_PRELOAD": str(shim), "POWERCUT_DIR": str(data), "POWERCUT_SHADOW": str(shadow),
            "PYTHONPATH": path, **extra}


def test_every_committed_alarm_survives_power_cuts(tmp_path, shim, mosquitto, write_config):
    rng = random.Random(20261129)
    data, shadow = tmp_path / "data", tmp_path / "shadow"
    data.mkdir()
    reported: set[int] = set()
    with start_server(holding={}) as plc:
        config = write_config(plant_config(plc.url, mosquitto.url))
        flipper = Flipper(plc, tag_addresses(), period=0.15)
        flipper.start()
        try:
            for n in range(1, CUTS + 1):
                seqs = run_and_cut(config, data, shadow, tmp_path / f"run{n}.log", cut_env(shim, data, shadow),
                                   rng.uniform(1.0, 2.5))
                assert seqs, "the run committed no alarm: nothing was proven"
                stored = set(committed_seqs(data / "outbox.db"))
                assert seqs <= stored, f"run {n}: committed, then lost in the cut: {sorted(seqs - stored)}"
                reported |= seqs
            # the restart on the disk the last cut left: it numbers on, never reusing a seq
            agent = AgentProcess(config, tmp_path / "after.log").start()
            try:
                assert wait_for(lambda: logged_seqs(tmp_path / "after.log"), 30), agent.output()
                assert agent.signal(signal.SIGTERM) == 0, agent.output()
            finally:
                agent.kill()
        finally:
            flipper.stop()
    seqs = committed_seqs(data / "outbox.db")
    assert seqs == list(range(1, len(seqs) + 1)), "a hole in the outbox's seqs"
    assert reported <= set(seqs)
    assert min(logged_seqs(tmp_path / "after.log")) > max(reported)
    assert any(shadow.iterdir())  # the shim saw the syncs


def test_the_cut_loses_alarms_when_synchronous_is_weakened(tmp_path, shim, mosquitto, write_config):
    """The control: with ``PRAGMA synchronous=NORMAL`` a commit is not synced, and the same cut
    and check find alarms the outbox had reported committed missing."""
    data, shadow = tmp_path / "data", tmp_path / "shadow"
    data.mkdir()
    with start_server(holding={}) as plc:
        config = write_config(plant_config(plc.url, mosquitto.url))
        flipper = Flipper(plc, tag_addresses(), period=0.15)
        flipper.start()
        try:
            env = cut_env(shim, data, shadow, POWERCUT_SYNCHRONOUS="NORMAL")
            seqs = run_and_cut(config, data, shadow, tmp_path / "weak.log", env, 2.0)
        finally:
            flipper.stop()
    assert seqs, "the run committed no alarm: nothing was proven"
    lost = seqs - set(committed_seqs(data / "outbox.db"))
    assert lost, "a weakened synchronous setting lost nothing: the cut does not drop unsynced writes"
