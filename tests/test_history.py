"""The local history: compression within its error bound, the [history] keys, day files and
retention, the size policy and its storage alarms (tests/test_history_cli.py: the command and a
real agent run)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.config import ConfigError, parse
from agent.history import MB, History, deviations, plan
from agent.history_compress import Compressor, Points, reconstruct
from agent.history_store import DAY_S, day_files, day_of, read
from agent.pipeline import build_manager
from drivers.base import SampleBatch
from tests.conftest import config_dict

T0 = 1764374400.0  # 2025-11-29T00:00:00Z, a UTC midnight


def feed(c: Compressor, tags, ts, values, quality=None, per_batch: int = 1) -> Points:
    """Samples of several tags (rows = times, columns = tags) through the compressor in batches
    of ``per_batch`` rows, then the held samples."""
    values = np.atleast_2d(values)
    n_rows, n_tags = values.shape
    q = np.zeros_like(values, dtype=np.uint8) if quality is None else quality
    out = []
    for r in range(0, n_rows, per_batch):
        rows = slice(r, r + per_batch)
        k = values[rows].shape[0]
        out.append(c.add(np.tile(tags, k), np.repeat(ts[rows], n_tags), values[rows].ravel(), q[rows].ravel()))
    out.append(c.flush())
    return Points.concat(out)


def one(points: Points, tag: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    sel = points.tag == tag
    order = np.argsort(points.ts[sel], kind="stable")
    return points.ts[sel][order], points.value[sel][order], points.quality[sel][order]


# --- compression -------------------------------------------------------------------------------


def test_swinging_door_rebuilds_every_sample_within_the_deviation():
    rng = np.random.default_rng(7)
    t = T0 + np.arange(5000.0)
    ramp = 0.01 * np.arange(5000) + rng.normal(0, 0.3, 5000)
    sine = 20 * np.sin(np.arange(5000) / 200) + rng.normal(0, 0.02, 5000)
    dev = np.array([0.25, 0.1])
    pts = feed(Compressor(dev, "swinging-door", 600), np.array([0, 1]), t, np.column_stack([ramp, sine]))
    for tag, signal_ in ((0, ramp), (1, sine)):
        ts, v, _ = one(pts, tag)
        err = np.abs(reconstruct("swinging-door", t, ts, v) - signal_)
        assert err.max() <= dev[tag] + 1e-9, (tag, err.max())
        assert ts[0] == t[0] and ts[-1] == t[-1]  # first sample and (flushed) last sample
    # the quiet sine compresses far, the noisy ramp still some
    assert (pts.tag == 1).sum() < 5000 / 20
    assert (pts.tag == 0).sum() < 5000 * 0.9


def test_swinging_door_holds_the_bound_where_crossing_doors_would_not():
    """Doors that have not crossed still allow a line to the held sample that misses an earlier
    one by more than the deviation (1.9 at t=1, 8.5 at t=10: 1.05 off with E = 1)."""
    c = Compressor(np.array([1.0]), "swinging-door", 600)
    t = T0 + np.array([0.0, 1.0, 10.0, 11.0])
    sig = np.array([0.0, 1.9, 8.5, -20.0])
    ts, v, _ = one(feed(c, np.array([0]), t, sig[:, None]), 0)
    assert np.abs(reconstruct("swinging-door", t, ts, v) - sig).max() <= 1.0


def test_batches_with_several_samples_of_a_tag_give_the_same_archive():
    rng = np.random.default_rng(3)
    t = T0 + np.arange(600.0)
    x = np.cumsum(rng.normal(0, 0.2, (600, 4)), axis=0)
    dev = np.array([0.1, 0.5, 1.0, 0.0])
    single = feed(Compressor(dev), np.arange(4), t, x, per_batch=1)
    many = feed(Compressor(dev), np.arange(4), t, x, per_batch=37)
    for tag in range(4):
        a, b = one(single, tag), one(many, tag)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_quality_change_archives_both_sides_and_nan_runs():
    c = Compressor(np.array([5.0]), "swinging-door", 600)
    t = T0 + np.arange(10.0)
    v = np.array([1, 1, 1, 1, np.nan, np.nan, np.nan, 2, 2, 2], dtype=float)
    q = np.array([0, 0, 0, 0, 3, 3, 3, 0, 0, 0], dtype=np.uint8)[:, None]
    ts, val, qual = one(feed(c, np.array([0]), t, v[:, None], q), 0)
    # the last good sample before the failure, the first failed one, the last failed one, the first good again
    assert list(ts - T0) == [0, 3, 4, 6, 7, 9]
    assert list(qual) == [0, 0, 3, 3, 0, 0]
    assert np.isnan(val[2]) and np.isnan(val[3]) and val[4] == 2


def test_max_interval_s_writes_flat_signals():
    t = T0 + np.arange(0.0, 3600.0, 1.0)
    for mode in ("swinging-door", "deadband"):
        ts, v, _ = one(feed(Compressor(np.array([0.5]), mode, 300), np.array([0]), t, np.full((3600, 1), 7.0)), 0)
        assert np.diff(ts).max() <= 300, mode
        assert len(ts) >= 3600 / 300 and (v == 7.0).all()


def test_deadband_archives_only_moves_beyond_the_band():
    t = T0 + np.arange(8.0)
    v = np.array([10.0, 10.4, 9.6, 10.5, 11.2, 11.0, 10.6, 13.0])
    ts, val, _ = one(feed(Compressor(np.array([0.5]), "deadband", 600), np.array([0]), t, v[:, None]), 0)
    assert list(val) == [10.0, 11.2, 10.6, 13.0]  # 10.5 is within 0.5 of 10.0, 10.6 is 0.6 from 11.2
    assert np.abs(reconstruct("deadband", t, ts, val) - v).max() <= 0.5


def test_none_archives_every_sample():
    t = T0 + np.arange(50.0)
    pts = feed(Compressor(np.array([1.0]), "none"), np.array([0]), t, np.full((50, 1), 3.0))
    assert len(pts) == 50


@settings(max_examples=60, deadline=None)
@given(st.lists(st.floats(-100, 100), min_size=2, max_size=200), st.floats(0.0, 5.0),
       st.sampled_from(["swinging-door", "deadband"]), st.integers(1, 7))
def test_property_every_sample_within_the_bound(values, dev, mode, per_batch):
    t = T0 + np.arange(len(values)) * 0.5
    sig = np.array(values)
    ts, v, _ = one(feed(Compressor(np.array([dev]), mode, 30), np.array([0]), t, sig[:, None], per_batch=per_batch), 0)
    err = np.abs(reconstruct(mode, t, ts, v) - sig)
    assert err.max() <= dev + 1e-9 * (1 + np.abs(sig).max())
    assert np.diff(ts).max(initial=0) <= 30


# --- config --------------------------------------------------------------------------------------


def test_history_keys_and_deviations(tmp_path):
    data = config_dict(history={"deviation_pct": 1.0, "max_interval_s": 60.0, "dir": "hist"})
    data["tags"][1]["history_deviation"] = 0.02
    cfg = parse(data, base=tmp_path)
    assert cfg.history.retention_days == 31 and cfg.history.compression == "swinging-door"
    assert cfg.history.path(cfg.agent.data_dir) == tmp_path / "hist"
    assert list(deviations(cfg)) == [4.5, 0.02]  # 1 % of [-50, 400]; the tag's own
    with pytest.raises(ConfigError) as err:
        parse(config_dict(history={"compression": "swinging_door", "retention": 30}))
    assert any("history.compression" in p and "did you mean 'swinging-door'" in p for p in err.value.problems)
    assert any(p.startswith("history.retention:") and "retention_days" in p for p in err.value.problems)


# --- files, retention, the size policy -------------------------------------------------------------


def history_for(tmp_path: Path, **keys):
    data = config_dict(history=keys)
    data["agent"]["data_dir"] = str(tmp_path / "data")
    cfg = parse(data, base=tmp_path)
    manager = build_manager(cfg)
    sent: list[dict] = []
    return cfg, History(cfg, manager, sent.extend), sent


def day_of_points(start: float, n: int = 200, tags: int = 2, step: float = 60.0) -> Points:
    ts = start + np.arange(n) * step
    return Points(np.tile(np.arange(tags, dtype=np.int32), n), np.repeat(ts, tags),
                  np.random.default_rng(int(start) % 1000).normal(100, 10, n * tags), np.zeros(n * tags, np.uint8))


def test_samples_compressed_chunk_by_chunk_give_the_archive_of_one_pass(tmp_path):
    cfg, h, _ = history_for(tmp_path, deviation=0.3)
    h.chunk = 7  # a pass every 4 batches of 2 tags, across the flushes below
    rng = np.random.default_rng(5)
    x = np.cumsum(rng.normal(0, 0.2, (300, 2)), axis=0)
    x[100:110, 1] = np.nan
    whole = Compressor(deviations(cfg), cfg.history.compression, cfg.history.max_interval_s)
    taken = []
    for k in range(300):
        h.record(SampleBatch.build("PLC1", np.array([0, 1]), x[k], T0 + k, 0))
        if k % 50 == 49:
            taken.append(h.take())
    assert not h.pending and not h.archived
    once = whole.add(np.tile([0, 1], 300), np.repeat(T0 + np.arange(300.0), 2), x.ravel(), np.zeros(600, np.uint8))
    chunked = Points.concat(taken)
    assert 0 < len(once) < 600
    for tag in (0, 1):
        a, b = one(once, tag), one(chunked, tag)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1], equal_nan=True) and np.array_equal(a[2], b[2])
    h.store.close()


def test_retention_deletes_whole_days_older_than_retention_days(tmp_path):
    cfg, h, sent = history_for(tmp_path, retention_days=31)
    for d in range(40):
        h.write(day_of_points(T0 + d * DAY_S), T0 + d * DAY_S, maintain=False)
    now = T0 + 39 * DAY_S + 3600  # one hour into the 40th day
    h.after(h.write(Points.empty(), now, maintain=True))
    days = list(day_files(h.dir))
    # the 31 days before today are kept whole, and today
    assert days[0] == day_of(now) - 31 and days[-1] == day_of(now) and len(days) == 32
    assert sent == []  # routine: no storage alarm
    h.store.close()


def test_plan_warns_before_cutting_and_cuts_only_when_full():
    today = day_of(T0 + 10 * DAY_S)
    now = today * DAY_S + 12 * 3600
    days = {today - k: 10 * MB for k in range(5, 0, -1)} | {today: 5 * MB}
    fits = plan(days, now, 31, 1024 * MB, free=10_000 * MB, min_free=0)
    assert fits.warn == fits.loss == fits.cut == [] and fits.projected == 32 * 10 * MB
    tight = plan(days, now, 31, 200 * MB, free=10_000 * MB, min_free=0)  # 55 MB used, 320 MB projected
    assert tight.cut == tight.loss == [] and not tight.full
    assert tight.warn == ["31 days of history projected at 320.0 MB, above max_mb 200.0"]
    disk = plan(days, now, 31, 1024 * MB, free=100 * MB, min_free=10 * MB)  # 265 MB more needed, 90 MB room
    assert disk.cut == disk.loss == [] and "free disk space 100.0 MB" in disk.warn[0]
    full = plan(days, now, 31, 40 * MB, free=10_000 * MB, min_free=0)
    assert full.cut == [today - 5, today - 4] and full.used == 35 * MB and "deleted to make room" in full.loss[0]
    low = plan(days, now, 31, 1024 * MB, free=15 * MB, min_free=20 * MB)  # below min_free: one day frees 10 MB
    assert low.cut == [today - 5] and low.warn
    over = plan({today: 50 * MB}, now, 31, 40 * MB, free=10_000 * MB, min_free=0)
    assert over.full and over.cut == [] and "new points are dropped" in over.loss[0]
    # a young day (first hour) is not extrapolated: its bytes so far are the rate
    young = plan({today: 1 * MB}, today * DAY_S + 600, 31, 1024 * MB, free=10_000 * MB, min_free=0)
    assert young.projected == 32 * MB


@pytest.fixture
def small_fs(tmp_path):
    """A 4 MB tmpfs: a gateway disk that really fills up."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=True)


def test_storage_alarm_before_the_store_cuts_into_retention(tmp_path, small_fs):
    """On a 4 MB disk 31 days cannot fit: the warning comes on the first day, with nothing
    lost; days inside the retention are deleted only when the disk is really full, and a
    second alarm says which."""
    cfg, h, sent = history_for(tmp_path, dir=str(small_fs), max_mb=100.0, min_free_mb=1.0, retention_days=31)
    warned_on = lost_on = None
    for d in range(30):
        now = T0 + d * DAY_S
        assert h.write(day_of_points(now, n=2880, step=30.0), now, maintain=False)["error"] is None
        h.after(h.write(Points.empty(), now + DAY_S - 1, maintain=True))
        ids = [m["id"] for m in sent]
        if "history/storage" in ids and warned_on is None:
            warned_on = d
            assert len(day_files(h.dir)) == d + 1, "nothing deleted yet"
        if "history.retention/storage" in ids:
            lost_on = d
            break
    assert warned_on == 0, sent
    assert lost_on is not None and lost_on > warned_on + 5, sent
    warn, lost = sent[0], sent[-1]
    assert (warn["id"], warn["kind"], warn["state"], warn["unit"]) == ("history/storage", "storage", "active", "MB")
    assert "free disk space" in warn["message"] and warn["context"]["dropped_days"] == []
    assert warn["value"] > 4.0  # the projected MB for 31 days
    assert (lost["id"], lost["state"]) == ("history.retention/storage", "active")
    assert lost["context"]["dropped_days"] == ["2025-11-29"] and "deleted to make room" in lost["message"]
    assert len(sent) == 2  # the warning is held while it holds: one message, not one per pass
    assert 1 * MB <= shutil.disk_usage(small_fs).free
    assert min(day_files(h.dir)) == day_of(T0) + 1
    # the next pass that loses nothing clears the loss alarm (the warning stays)
    h.after(h.write(Points.empty(), T0 + lost_on * DAY_S + DAY_S - 1, maintain=True))
    assert [(m["id"], m["state"]) for m in sent[2:]] == [("history.retention/storage", "cleared")]
    h.store.close()


def test_a_damaged_day_file_raises_the_loss_alarm_and_a_new_file_takes_over(tmp_path):
    cfg, h, sent = history_for(tmp_path)
    now = T0 + 3600
    assert h.write(day_of_points(T0, n=10), now, maintain=False)["error"] is None
    path = next(iter(day_files(h.dir).values()))
    h.store.close()
    path.write_bytes(b"not a database" * 500)
    for suffix in ("-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)
    report = h.write(day_of_points(T0 + 600, n=10), now, maintain=False)
    assert "file is not a database" in report["error"]
    h.after(report)
    assert [(m["id"], m["state"]) for m in sent] == [("history.retention/storage", "active")]
    assert "history write failed" in sent[0]["message"]
    path.rename(tmp_path / "damaged.db")  # what the operator does
    assert h.write(day_of_points(T0 + 1200, n=10), now, maintain=False)["error"] is None
    h.after(h.write(Points.empty(), now, maintain=True))  # reports the 20 points lost since the last pass
    assert len(sent) == 1 and h.active["history.retention"]
    h.after(h.write(Points.empty(), now + 60, maintain=True))  # a pass that lost nothing
    assert [(m["id"], m["state"]) for m in sent[1:]] == [("history.retention/storage", "cleared")]
    assert len(read(h.dir, "R101.TI01", T0, T0 + DAY_S)) == 10
    h.store.close()
