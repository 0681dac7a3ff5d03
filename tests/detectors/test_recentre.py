"""PCA's moving centre for slowly drifting plants (``refit = "recursive"``, detectors/recentre.py)."""

from __future__ import annotations

import numpy as np
import pytest

from detectors import _pca
from detectors.cva import levels
from detectors.pca import PcaFamily
from detectors.pca_model import fit
from detectors.recentre import Recentring

MIX = np.array([[1.0, 0.8, 0.3], [0.0, 0.6, 0.9], [0.0, 0.0, 0.4]])


def steady(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.normal(size=(n, 3)) @ MIX + np.array([50.0, 10.0, 3.0])


def drifting(n: int, seed: int, fault: tuple[int, int] | None = None) -> np.ndarray:
    """The steady process, its operating point wandering slowly along its own correlation (a rig
    warming: every tag moves as the process moves them together); with a fault, the third tag
    leaves the correlation by 5 of its standard deviations over rows fault[0]..fault[1]."""
    rng = np.random.default_rng(seed)
    X = steady(n, rng)
    X += np.linspace(0.0, 3.0, n)[:, None] * np.array([1.0, 1.4, 1.2])
    if fault is not None:
        X[fault[0]:fault[1], 2] += 5.0 * float(np.linalg.norm(MIX[:, 2]))
    return X


def alarm_rows(fam: PcaFamily, X: np.ndarray, batch: int) -> np.ndarray:
    """Per row: the model in alarm after it, replayed in batches of ``batch`` rows."""
    n, p = X.shape
    out = np.zeros(n, dtype=bool)
    for start in range(0, n, batch):
        rows = X[start:start + batch]
        tag = np.tile(np.arange(p, dtype=np.int32), len(rows))
        ts = np.repeat(start + np.arange(len(rows), dtype=np.float64), p)
        for c in fam.update(tag, rows.ravel().copy(), ts, np.zeros(tag.shape, dtype=np.uint8)):
            out[int(c.ts):] = c.active
    return out


@pytest.fixture(scope="module")
def model():
    """Fitted on 400 rows of the process (the start of its drift), limits at 1 % of fresh rows."""
    return fit(drifting(3000, 1)[:400], ["a", "b", "c"], confidence=0.99, variance=0.9)


def test_the_moving_centre_lowers_false_alarms_on_drifting_normal_data_and_still_sees_the_fault(model):
    """Over 2,600 rows after training the plant moves on: the fixed centre alarms on a third of the
    normal rows (on most of the last 800), the moving centre (memory: the 400 training rows, limits
    at confidence 0.99) on under 5 %; both see the whole fault."""
    X = drifting(3000, 2, fault=(2000, 2200))[400:]
    faulty = np.zeros(len(X), dtype=bool)
    faulty[1600:1800] = True
    fixed = alarm_rows(PcaFamily.for_model(3, model, [0, 1, 2], refit="none", on_delay_s=0.0, off_delay_s=0.0),
                       X, 500)
    moving = alarm_rows(PcaFamily.for_model(3, model, [0, 1, 2], on_delay_s=0.0, off_delay_s=0.0), X, 500)
    assert fixed[~faulty].mean() > 0.25 and fixed[~faulty][-800:].mean() > 0.5
    assert moving[~faulty].mean() < 0.05
    assert moving[faulty].mean() > 0.9 and fixed[faulty].mean() > 0.9


def test_the_centre_does_not_move_while_in_alarm(model):
    centre = Recentring(model.mean, model.scale, 400)
    debounce = _pca.SeriesDebounce(0.0, 0.0)
    X = steady(50, np.random.default_rng(3))
    X[:, 2] += 10.0  # far off the correlation: every row is over the SPE limit
    before = centre.mean.copy()
    *_, pos, _, new = centre.judge(model.statistics, X, np.arange(50.0), debounce, model.t2_limit, model.spe_limit)
    assert len(new) == 1 and new[0] != 0 and np.array_equal(centre.mean, before)
    # normal rows move it again
    centre.judge(model.statistics, steady(5, np.random.default_rng(4)), 50 + np.arange(5.0), debounce,
                 model.t2_limit, model.spe_limit)
    assert not np.array_equal(centre.mean, before)


def row_by_row(model, X: np.ndarray, on: float, off: float, memory: float) -> np.ndarray:
    """The definition, one row at a time: judge with the centre, then move it if the row is accepted."""
    mean, debounce, out = model.mean.copy(), _pca.SeriesDebounce(on, off), []
    for i, x in enumerate(X):
        t2, spe = model.statistics(((x - mean) / model.scale)[None, :])
        raw = np.array([int(t2[0] > model.t2_limit) + 2 * int(spe[0] > model.spe_limit)], dtype=np.int8)
        debounce.run(raw, np.array([float(i)]))
        out.append(debounce.level)
        if raw[0] == 0 and debounce.level == 0:
            mean = mean + (x - mean) / memory
    return np.array(out)


@pytest.mark.parametrize("on,off", [(0.0, 0.0), (3.0, 10.0)])
def test_batches_give_the_row_by_row_result(model, on, off):
    X = drifting(1500, 5, fault=(900, 1000))[300:]
    want = row_by_row(model, X, on, off, 400)
    for batch in (1, 7, 100, len(X)):
        centre, debounce, got = Recentring(model.mean, model.scale, 400), _pca.SeriesDebounce(on, off), []
        for s in range(0, len(X), batch):
            *_, pos, _, new = centre.judge(model.statistics, X[s:s + batch], np.arange(s, s + len(X[s:s + batch]),
                                           dtype=np.float64), debounce, model.t2_limit, model.spe_limit)
            got.append(levels(got[-1][-1] if got else 0, pos, new, len(X[s:s + batch])))
        assert np.array_equal(np.concatenate(got), want), batch
    assert (want != 0).any() and (want == 0).any()


def test_refit_options_are_checked():
    assert ("refit", "must be one of none, recursive, not 'moving-window'") in \
        PcaFamily.check_model({"refit": "moving-window"})
    assert PcaFamily.check_model({"refit_memory": -1})[0][0] == "refit_memory"
    assert PcaFamily.check_model({"refit": "none", "refit_memory": 1000}) == []
