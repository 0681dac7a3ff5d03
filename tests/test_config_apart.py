"""`plantwatch run` loads its config in a child process (agent.config_apart): the Config that
comes back is the one `load` makes, the objects it shares still shared, and the pipeline built
from it judges alike; a ConfigError crosses with all its problems; a child that dies, or a Config
that does not pickle, leaves the parent to load the config itself; and the parent keeps less of a
big [[tags]] config than a load in the process leaves behind.

The checks that need the fork run in a fresh interpreter (``_fresh``): ``load_apart`` loads in
the process when other threads run, which a test session may have. Each counts the forks, so it
fails if the config was not loaded apart."""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from agent.config import Config, ConfigError, load
from tests.conftest import config_dict, to_toml
from tests.helpers import AgentProcess, NumberingSink
from tests.test_points import reactor_with_points

ROOT = Path(__file__).resolve().parents[1]
MODEL = '\n[[models]]\nname = "reactor"\nkind = "pca"\ntags = ["R101.TI01", "R101.PI01", "R101.FI01"]\nfile = "reactor.npz"\n'


@pytest.fixture(scope="module")
def plant(tmp_path_factory) -> Path:
    """configs/chemical-reactor.toml (computed tags, a discrete tag) with the example points file
    (discrete rows, presets), a trained [[models]] entry and a password file its group can read
    (a warning)."""
    from tests.test_cli import plantwatch
    from tests.test_replay import correlated_csv

    folder = tmp_path_factory.mktemp("plant")
    path = reactor_with_points(folder)
    text = path.read_text(encoding="utf-8").replace(
        'profile = "json"', 'username = "gw"\npassword_file = "mqtt.pass"\nprofile = "json"', 1
    )
    path.write_text(text + MODEL, encoding="utf-8")
    (folder / "mqtt.pass").write_text("secret\n")
    os.chmod(folder / "mqtt.pass", 0o640)
    trained = plantwatch(
        "train", str(path), "--csv", str(correlated_csv(folder / "normal.csv", 600, 1)), "--model", "reactor"
    )
    assert trained.returncode == 0, trained.stderr
    return path


def _fresh(check: str, *args: str, env: dict[str, str] | None = None) -> str:
    """Run ``check(*args)`` of this module in a new interpreter (one thread); its stdout."""
    code = "import sys, tests.test_config_apart as t; getattr(t, sys.argv[1])(*sys.argv[2:])"
    result = subprocess.run(
        [sys.executable, "-c", code, check, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def _apart(path: str | Path) -> Config:
    """``load_apart(path)``, asserting it forked once."""
    from agent.config_apart import load_apart

    forks: list[int] = []
    os.register_at_fork(after_in_parent=lambda: forks.append(1))
    cfg = load_apart(path)
    assert forks == [1], forks
    return cfg


def _children() -> list[str]:
    """The processes this one started that are still there (running, or zombies not reaped)."""
    return [
        pid
        for task in Path(f"/proc/{os.getpid()}/task").iterdir()
        for pid in (task / "children").read_text().split()
    ]


def _fields(obj: object) -> dict[str, object]:
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj)}


# --- the same Config -----------------------------------------------------------------------------


def check_same_config(path: str) -> None:
    here, apart = load(path), _apart(path)
    assert apart is not here and apart == here
    assert [_fields(t) for t in apart.tags] == [_fields(t) for t in here.tags]
    assert [_fields(t.spec) for t in apart.tags] == [_fields(t.spec) for t in here.tags]
    assert apart.devices == here.devices and apart.models == here.models
    assert apart.family_params() == here.family_params()
    assert (
        apart.computed.programs == here.computed.programs
        and apart.computed.intervals == here.computed.intervals
    )
    assert apart.warnings == here.warnings
    assert apart.tag_positions == here.tag_positions and apart.families_in_use == here.families_in_use
    # what the config holds: computed and discrete tags, points file rows, a model, a warning
    assert len(here.computed.programs) == 2 and len(here.models) == 1 and len(here.warnings) == 1
    assert {"R101.COOLING.LOSS", "CW.P101.RUN"} <= {t.name for t in here.tags if "discrete" in t.families}
    assert here.agent.points_file is not None and len(here.tags) == 16
    assert _children() == []
    print("same")


def test_the_config_loaded_apart_is_the_one_load_makes(plant):
    assert _fresh("check_same_config", str(plant)) == "same\n"


def _identities(a: object, b: object) -> int:
    """Walk two equal object graphs side by side: wherever ``a`` has one object twice, ``b`` has
    one object twice, and the other way round. Ints, bools, None and strings of one character
    left out (CPython shares the small ones as it makes them). The number of objects of ``a`` met."""
    a_to_b: dict[int, int] = {}
    b_to_a: dict[int, int] = {}
    stack = [(a, b)]
    while stack:
        x, y = stack.pop()
        assert type(x) is type(y), (x, y)
        if x is None or type(x) in (int, bool) or (type(x) is str and len(x) < 2):
            continue
        if id(x) in a_to_b:  # met before (the graphs hold every object met: no id is reused)
            assert a_to_b[id(x)] == id(y), ("one object in the loaded config, two apart", x)
            continue
        assert id(y) not in b_to_a, ("two objects in the loaded config, one apart", x)
        a_to_b[id(x)], b_to_a[id(y)] = id(y), id(x)
        if isinstance(x, dict):
            assert list(x) == list(y)
            stack += [*zip(x, y, strict=True), *zip(x.values(), y.values(), strict=True)]
        elif isinstance(x, (list, tuple)):
            stack += zip(x, y, strict=True)
        elif dataclasses.is_dataclass(x):
            stack += [(getattr(x, f.name), getattr(y, f.name)) for f in dataclasses.fields(x)]
    return len(a_to_b)


def check_sharing(path: str, points: str) -> None:
    from agent.pipeline import build_engine

    here, apart = load(path), _apart(path)
    met = _identities(here, apart)
    assert met > 300, met  # the walk went through the tags
    # the detector families keep one table per distinct one, as with the config loaded here
    tables = [{f.name: repr(f.params) for f in build_engine(cfg).families} for cfg in (here, apart)]
    assert tables[0] == tables[1], tables
    # a points file of tags with the same settings: one object for each setting, after the trip too
    here, apart = load(points), _apart(points)
    _identities(here, apart)
    rows = apart.tags[2:]
    assert len(rows) == 50 and set(rows[0].families) >= {"limit", "ewma", "cusum", "flatline"}
    for attr in ("families", "range", "unit", "desc"):
        assert len({id(getattr(t, attr)) for t in rows}) == 1, attr
    for attr in ("options", "device", "type", "order", "scale", "offset"):
        assert len({id(getattr(t.spec, attr)) for t in rows}) == 1, attr
    assert len({id(t.families[name]) for t in rows for name in ("limit", "ewma")}) == 2
    for family in build_engine(apart).families:
        watched = [t.index for t in rows if family.name in t.families]
        assert len({id(family.params[i]) for i in watched}) == 1, family.name
    print("shared", met)


def test_what_the_config_shares_stays_shared(plant, tmp_path, write_config):
    from tests.test_tag_memory import plant as same_settings

    out = _fresh("check_sharing", str(plant), str(same_settings(tmp_path, write_config, 50)))
    assert out.startswith("shared ")


def check_same_pipeline(path: str) -> None:
    from agent.pipeline import Pipeline
    from drivers.base import GOOD, SampleBatch

    here, apart = load(path), _apart(path)
    pipes = [Pipeline(cfg, NumberingSink()) for cfg in (here, apart)]
    assert [type(f) for f in pipes[0].engine.families] == [type(f) for f in pipes[1].engine.families]
    assert [dict(f.params) for f in pipes[0].engine.families] == [
        dict(f.params) for f in pipes[1].engine.families
    ]
    assert pipes[0].manager.tags == pipes[1].manager.tags
    read = [t for t in here.tags if t.device == "r1-plc"]
    index = np.array([t.index for t in read], dtype=np.int32)
    rng = np.random.default_rng(7)
    out: list[list[dict]] = [[], []]
    for step in range(240):  # values wander, then everything climbs: limits, rates, the model
        values = 50.0 + rng.normal(0, 1, len(read)) + (0.0 if step < 120 else (step - 120) * 3.0)
        for k, pipe in enumerate(pipes):
            batch = SampleBatch.build("r1-plc", index, values, 1.7e9 + step, GOOD)
            out[k] += pipe.process(batch, 1.7e9 + step)
    kinds = {m["kind"] for m in out[0]}
    assert out[0] == out[1] and len(out[0]) >= 5 and "limit" in kinds, kinds
    assert "pca" in {f.name for f in pipes[0].engine.families}
    print("judged", len(out[0]), sorted(kinds))


def test_the_pipeline_built_from_it_judges_as_the_one_from_load(plant):
    assert _fresh("check_same_pipeline", str(plant)).startswith("judged ")


# --- problems --------------------------------------------------------------------------------------


def test_a_config_error_pickles_with_its_problems():
    exc = ConfigError(["agent.plant: is required", "tags[0].name: must be a string, not 1"])
    again = pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    assert type(again) is ConfigError and again.problems == exc.problems and str(again) == str(exc)


def test_run_prints_each_problem_of_a_bad_config_once_and_exits_2(tmp_path, write_config):
    data = config_dict()
    data["agent"]["nope"] = 1
    data["tags"][0]["alarms"]["h"] = 500.0  # above hh
    data["tags"].append({"name": "R101.PI01", "device": "r9", "address": "hr:7"})  # twice, unknown device
    path = write_config(data)
    with pytest.raises(ConfigError) as here:
        load(path)
    problems = here.value.problems
    assert len(problems) >= 4
    result = subprocess.run(
        [sys.executable, "-m", "agent.cli", "run", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.splitlines() == [f"{path}: {len(problems)} problems", *(f"  {p}" for p in problems)]
    assert result.stdout == ""


# --- a child that gives no answer ----------------------------------------------------------------


def check_killed_child(fifo: str, copy: str) -> None:
    """``load_apart(fifo)`` while the test kills the child (blocked opening the FIFO) and then
    writes the config into it: the parent loads the config itself, and reaps the child."""
    cfg = _apart(fifo)
    assert dataclasses.replace(cfg, path=Path(copy)) == load(copy)
    assert _children() == []
    print("loaded", len(cfg.tags))


def _child_of(proc: subprocess.Popen, timeout: float = 60.0) -> int:
    """The pid of the process ``proc`` forked, once it has."""
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        pids = children.read_text().split()
        if pids:
            return int(pids[0])
        time.sleep(0.01)
    raise AssertionError(f"no child: {proc.communicate(timeout=10)}")


def _state(pid: int) -> str:
    """The process's state: S sleeping (in open() of a FIFO that has no writer yet), Z dead
    and not reaped, "" gone (reaped)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return ""


def _blocked(pid: int) -> bool:
    return _state(pid) == "S"


def _feed(fifo: Path, text: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    """Write ``text`` into ``fifo`` once a process opens it to read (``proc`` still running)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while nobody reads it
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "nobody reads the config"
            time.sleep(0.01)
    os.set_blocking(fd, True)
    with open(fd, "w", encoding="utf-8") as f:
        f.write(text)


def test_a_child_killed_while_loading_leaves_the_parent_to_load_the_config(plant):
    fifo = plant.parent / "fifo.toml"
    os.mkfifo(fifo)
    code = "import sys, tests.test_config_apart as t; t.check_killed_child(*sys.argv[1:])"
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(fifo), str(plant)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        child = _child_of(proc)
        deadline = time.monotonic() + 30
        while not _blocked(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert _blocked(child)
        os.kill(child, signal.SIGKILL)
        while _state(child) not in ("Z", ""):  # dead: no longer a reader of the FIFO
            time.sleep(0.01)
        _feed(fifo, plant.read_text(encoding="utf-8"), proc)  # once the parent reads the FIFO itself
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
        fifo.unlink()
    assert proc.returncode == 0, out + err
    assert out == "loaded 16\n" and err == ""


def test_a_sigterm_during_the_load_stops_the_agent_once_it_is_up(tmp_path, write_config):
    """As systemd stops a unit: SIGTERM to the agent and to the child loading its config. Both
    record it and go on; the agent starts, stops at once and exits 0, the warning logged once."""
    (tmp_path / "mqtt.pass").write_text("secret\n")
    os.chmod(tmp_path / "mqtt.pass", 0o640)
    config = write_config(
        config_dict(uplink={"url": "mqtt://127.0.0.1:1", "username": "gw", "password_file": "mqtt.pass"})
    )
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    agent = AgentProcess(fifo, tmp_path / "agent.log").start()
    try:
        assert agent.proc is not None
        child = _child_of(agent.proc)
        deadline = time.monotonic() + 30
        while not _blocked(child) and time.monotonic() < deadline:
            time.sleep(0.01)
        agent.proc.send_signal(signal.SIGTERM)
        os.kill(child, signal.SIGTERM)
        time.sleep(0.5)
        assert agent.proc.poll() is None and _blocked(child)  # both still waiting for the config
        _feed(fifo, config.read_text(encoding="utf-8"), agent.proc)
        rc = agent.wait(60)
    finally:
        agent.kill()
    out = agent.output()
    assert rc == 0, out
    assert out.count(" running: plant ") == 1 and out.count("plantwatch stopped") == 1, out
    assert out.count("uplink.password_file: ") == 1, out


# --- plugins: an object that does not pickle, an exception -------------------------------------

PLUGIN = '''
from detectors.base import Family


class Held:
    """Holds what cannot leave the process (a handle, a lock)."""

    def __reduce__(self):
        raise TypeError("a held resource does not pickle")


class Odd(Exception):
    def __init__(self, what, where):  # pickles, but cannot be made again from its args
        super().__init__(f"{what} at {where}")


class HeldFamily(Family):
    name = "held"
    defaults = {}

    @classmethod
    def default_params(cls, tag):
        if tag["name"].startswith("HELD."):
            return {"source": Held()}
        if tag["name"].startswith("BUG."):
            raise LookupError("the plugin lost its table")
        if tag["name"].startswith("ODD."):
            raise Odd("odd", tag["name"])
        return None

    def update(self, tag, value, ts, quality):
        return []
'''


def check_plugins(folder: str) -> None:
    from pw_held import Held

    base = Path(folder)
    cfg = _apart(base / "held.toml")  # the child's Config does not pickle: loaded here instead
    assert isinstance(cfg.tags[-1].families["held"]["source"], Held)
    assert _children() == []
    with pytest.raises(LookupError, match="the plugin lost its table") as bug:
        _apart(base / "bug.toml")
    assert any("raised while loading the config in a child process" in note for note in bug.value.__notes__)
    assert any("default_params" in note for note in bug.value.__notes__)  # the child's traceback
    with pytest.raises(RuntimeError) as odd:  # its text, with the child's traceback as a note
        _apart(base / "odd.toml")
    assert str(odd.value) == "Odd: odd at ODD.X" and "raise Odd(" in odd.value.__notes__[0]
    assert _children() == []
    print("plugins")


def test_a_plugins_object_or_exception_that_does_not_pickle(tmp_path):
    (tmp_path / "pw_held.py").write_text(textwrap.dedent(PLUGIN))
    dist = tmp_path / "pw_held-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: pw-held\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[plantwatch.detectors]\nheld = pw_held:HeldFamily\n")
    for name in ("held", "bug", "odd"):
        data = config_dict()
        data["tags"].append({"name": f"{name.upper()}.X", "device": "r1-plc", "address": "hr:50"})
        (tmp_path / f"{name}.toml").write_text(to_toml(data))
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            p for p in (str(tmp_path), str(ROOT), os.environ.get("PYTHONPATH")) if p
        ),
    }
    assert _fresh("check_plugins", str(tmp_path), env=env) == "plugins\n"


# --- memory --------------------------------------------------------------------------------------


def check_memory(how: str, path: str) -> None:
    """The growth of VmRSS (kB, after a full collection) over loading ``path`` ``how``."""
    import gc

    from agent.config.loader import registered_families

    def rss() -> int:
        gc.collect()
        status = Path("/proc/self/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS:")).split()[1])

    registered_families()  # imported before measuring, whichever way the config is loaded
    before = rss()
    cfg = _apart(path) if how == "apart" else load(path)
    print(json.dumps({"tags": len(cfg.tags), "growth_kb": rss() - before}))


def test_the_parent_keeps_less_of_a_big_toml_config(tmp_path, write_config):
    tags = [
        {
            "name": f"D{i // 50:03d}.TI{i % 50:02d}",
            "device": "r1-plc",
            "address": f"hr:{2 * i}",
            "type": "float32",
            "unit": "°C",
            "desc": f"温度 {i}",
            "range": [0.0, 500.0],
            "alarms": {"hh": 180.0, "h": 160.0, "l": 20.0, "deadband": 1.0},
            "detectors": ["ewma", "cusum"],
        }
        for i in range(4000)
    ]
    path = write_config(config_dict(tags=tags))
    here, apart = (json.loads(_fresh("check_memory", how, str(path))) for how in ("load", "apart"))
    assert here["tags"] == apart["tags"] == 4000
    # measured: 4,000 tags grow the process by ~7 MB loaded here, by under 2 MB loaded apart
    assert apart["growth_kb"] * 2 < here["growth_kb"], (here, apart)
