"""The PCA model: fitted on normal operation, saved and loaded as a versioned .npz file, and its
statistics, Hotelling's T^2 and SPE (Q), with the limits: T^2 from the F distribution, SPE from
Jackson and Mudholkar (1979). detectors/pca.py is the family that watches live ticks with it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from detectors.base import ModelError
from detectors.inputs import InputSpec
from detectors.modelfile import read_npz, save_npz

#: version of the .npz layout written by ``PcaModel.save``; 2 added the model's inputs (derived
#: inputs, lags) and the on/off delays ``plantwatch train`` chose
FORMAT_VERSION = 2

#: rows per chunk where a fit or a score goes over many rows
CHUNK = 65536

#: level code -> level name: which statistic is over its limit
PCA_LEVELS = {1: "T2", 2: "SPE", 3: "T2+SPE"}


class PcaModelError(ModelError):
    """A PCA model file is missing, corrupt, of another version, or for other tags."""


@dataclass(frozen=True)
class PcaModel:
    """An autoscaled PCA model of normal operation and its control limits. ``names`` are the
    model's tags; its p input columns are ``inputs.columns()`` (the tags' levels, derived
    inputs and lags, see detectors.inputs)."""

    names: tuple[str, ...]
    mean: np.ndarray  # (p,)
    scale: np.ndarray  # (p,) standard deviations used for autoscaling
    loadings: np.ndarray  # (p, k) principal directions in the autoscaled space
    eigenvalues: np.ndarray  # (k,) variance of each retained score
    residual_eigenvalues: np.ndarray  # (p - k,) variance left out, for the SPE limit
    n_train: int
    confidence: float
    t2_limit: float
    spe_limit: float
    inputs: InputSpec | None = None  # None: the tags' levels
    on_delay_s: float = 0.0  # chosen by train; the config's on_delay_s/off_delay_s win when given
    off_delay_s: float = 0.0
    target_far: float = 0.0  # > 0: the limits were set empirically for this false-alarm rate

    @property
    def spec(self) -> InputSpec:
        return self.inputs if self.inputs is not None else InputSpec(self.names)

    @property
    def n_components(self) -> int:
        return int(self.loadings.shape[1])

    def statistics(self, Z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T^2 and SPE of autoscaled rows Z (n, p)."""
        T = Z @ self.loadings
        TT = T * T
        t2 = (TT / self.eigenvalues).sum(axis=1)
        # the loadings are orthonormal, so |z - P t|^2 = |z|^2 - |t|^2: no reconstruction needed
        spe = np.einsum("ij,ij->i", Z, Z) - TT.sum(axis=1)
        return t2, np.maximum(spe, 0.0, out=spe)

    def with_limits(self, t2_limit: float, spe_limit: float, on_delay_s: float, off_delay_s: float,
                    target_far: float) -> PcaModel:
        """The model with the limits and delays ``plantwatch train`` calibrated."""
        return replace(self, t2_limit=t2_limit, spe_limit=spe_limit, on_delay_s=on_delay_s, off_delay_s=off_delay_s,
                       target_far=target_far)

    def autoscale(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T^2 and SPE of raw rows X (n, p) in engineering units (a chunk of rows at a time)."""
        if len(X) <= CHUNK:
            return self.statistics(self.autoscale(X))
        parts = [self.statistics(self.autoscale(X[a:a + CHUNK])) for a in range(0, len(X), CHUNK)]
        return np.concatenate([t for t, _ in parts]), np.concatenate([s for _, s in parts])

    def contributions(self, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per-variable contributions of one autoscaled row to T^2 and to SPE; each sums to
        its statistic (T^2 by the complete decomposition z_i * sum_j P_ij t_j / lambda_j)."""
        t = z @ self.loadings
        c_t2 = z * (self.loadings @ (t / self.eigenvalues))
        r = z - self.loadings @ t
        return c_t2, r * r

    # --- files --------------------------------------------------------------------------

    def save(self, path: str | os.PathLike) -> None:
        """Write the model atomically (a temp file renamed into place: never half a file)."""
        save_npz(
            path,
            format="plantwatch.pca",
            version=FORMAT_VERSION,
            names=np.array(self.names, dtype=np.str_),
            mean=self.mean,
            scale=self.scale,
            loadings=self.loadings,
            eigenvalues=self.eigenvalues,
            residual_eigenvalues=self.residual_eigenvalues,
            n_train=self.n_train,
            confidence=self.confidence,
            t2_limit=self.t2_limit,
            spe_limit=self.spe_limit,
            inputs=self.spec.to_json(),
            delays=np.array([self.on_delay_s, self.off_delay_s]),
            target_far=self.target_far,
        )

    # linear: one check after the other, each naming the file
    @classmethod
    def load(cls, path: str | os.PathLike, names: Sequence[str] | None = None) -> PcaModel:
        """Read a model; with ``names``, also require it to be a model of exactly those tags
        in that order. Every problem raises PcaModelError naming the file."""
        path = Path(path)

        def fail(problem: str) -> PcaModelError:
            return PcaModelError(f"{path}: {problem}")

        data = read_npz(path, "plantwatch.pca", FORMAT_VERSION, fail, "PCA", "model format version")
        required = ("names", "mean", "scale", "loadings", "eigenvalues", "residual_eigenvalues",
                    "n_train", "confidence", "t2_limit", "spe_limit", "inputs", "delays", "target_far")
        missing = [k for k in required if k not in data]
        if missing:
            raise fail(f"missing arrays: {', '.join(missing)}")
        model_names = tuple(str(s) for s in data["names"].tolist())
        spec = _spec(data, model_names, fail)
        p = len(spec.columns())
        loadings = np.asarray(data["loadings"], dtype=np.float64)
        k = loadings.shape[1] if loadings.ndim == 2 else -1
        shapes = {
            "mean": (data["mean"].shape, (p,)),
            "scale": (data["scale"].shape, (p,)),
            "loadings": (loadings.shape, (p, k)),
            "eigenvalues": (data["eigenvalues"].shape, (k,)),
            "residual_eigenvalues": (data["residual_eigenvalues"].shape, (p - k,)),
        }
        for key, (got, want) in shapes.items():
            if k < 1 or got != want:
                raise fail(f"{key} has shape {got}, expected {want} for {p} inputs")
        floats = {key: np.asarray(data[key], dtype=np.float64) for key in shapes}
        if not all(np.isfinite(a).all() for a in floats.values()) or not (floats["scale"] > 0).all():
            raise fail("non-finite values or non-positive scale in the model")
        if names is not None and tuple(names) != model_names:
            raise fail(f"fitted for tags {list(model_names)}, but the config lists {list(names)}")
        return cls(
            names=model_names,
            mean=floats["mean"],
            scale=floats["scale"],
            loadings=loadings,
            eigenvalues=floats["eigenvalues"],
            residual_eigenvalues=floats["residual_eigenvalues"],
            n_train=int(data["n_train"]),
            confidence=float(data["confidence"]),
            t2_limit=float(data["t2_limit"]),
            spe_limit=float(data["spe_limit"]),
            inputs=spec,
            on_delay_s=float(data["delays"][0]),
            off_delay_s=float(data["delays"][1]),
            target_far=float(data["target_far"]),
        )


def _spec(data: Mapping[str, Any], names: tuple[str, ...], fail) -> InputSpec:
    try:
        spec = InputSpec.from_json(str(data["inputs"]))
    except (ValueError, KeyError, TypeError) as e:
        raise fail(f"unreadable model inputs ({e})") from None
    if spec.tags != names:
        raise fail("the model's inputs are not over its tags")
    return spec


def t2_limit(n: int, k: int, confidence: float) -> float:
    """Hotelling T^2 limit for a new observation, from a model fitted on n rows, k scores."""
    # here, not at import: scipy.stats costs ~70 MB that a config without models never needs
    from scipy import stats

    return k * (n - 1) * (n + 1) / (n * (n - k)) * float(stats.f.ppf(confidence, k, n - k))


def spe_limit(residual_eigenvalues: np.ndarray, confidence: float) -> float:
    """Jackson–Mudholkar limit of the squared prediction error."""
    lam = np.asarray(residual_eigenvalues, dtype=np.float64)
    th1, th2, th3 = (float((lam**i).sum()) for i in (1, 2, 3))
    if th1 <= 0.0 or th2 <= 0.0:
        return math.inf  # no residual space left: SPE is zero by construction, not monitored
    h0 = 1.0 - 2.0 * th1 * th3 / (3.0 * th2 * th2)
    from scipy import stats  # see t2_limit

    c = float(stats.norm.ppf(confidence))
    base = c * math.sqrt(2.0 * th2 * h0 * h0) / th1 + 1.0 + th2 * h0 * (h0 - 1.0) / (th1 * th1)
    return th1 * max(base, 0.0) ** (1.0 / h0)


def _scatter(X: np.ndarray, mean: np.ndarray) -> np.ndarray:
    """The scatter matrix about the mean, a chunk of rows at a time: never a copy of X."""
    C = np.zeros((X.shape[1], X.shape[1]))
    for a in range(0, len(X), CHUNK):
        D = X[a:a + CHUNK] - mean
        C += D.T @ D
    return C


def fit(
    X: np.ndarray,
    names: Sequence[str],
    confidence: float = 0.99,
    variance: float = 0.9,
    n_components: int | None = None,
    inputs: InputSpec | None = None,
) -> PcaModel:
    """Fit a PCA model of normal operation from rows X (n samples, one column per input of
    ``inputs``, by default the levels of the tags ``names``).

    Autoscaling: each input is centred and divided by its standard deviation (a constant input
    keeps scale 1, so it contributes only when it moves; `plantwatch train` refuses a constant
    column before it gets here). ``n_components`` if given, else the fewest components explaining
    ``variance`` of the autoscaled data. The eigenvectors come from the p x p correlation
    matrix (one pass over the rows; p is small beside n).
    """
    spec = inputs if inputs is not None else InputSpec(tuple(names))
    columns = spec.columns()
    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2 or X.shape[1] != len(columns):
        raise ValueError(f"X must be (n, {len(columns)}) for {len(columns)} inputs, got shape {X.shape}")
    n, p = X.shape
    if n < p + 2:
        raise ValueError(f"need at least {p + 2} rows to fit {p} inputs, got {n}")
    if not np.isfinite(X).all():
        raise ValueError("X contains NaN or infinite values; drop or fill those rows first")
    if not 0.5 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0.5, 1), not {confidence}")
    mean = X.mean(axis=0)
    C = _scatter(X, mean)
    scale = np.sqrt(np.maximum(np.diag(C), 0.0) / (n - 1))
    scale[~(scale > 1e-12 * np.maximum(1.0, np.abs(mean)))] = 1.0
    eig, vec = np.linalg.eigh(C / np.outer(scale, scale) / (n - 1))
    order = np.argsort(eig)[::-1]
    eig, vt = np.maximum(eig[order], 0.0), vec[:, order].T
    if n_components is None:
        if not 0.0 < variance <= 1.0:
            raise ValueError(f"variance must be in (0, 1], not {variance}")
        explained = np.cumsum(eig) / eig.sum()
        k = int(np.searchsorted(explained, variance - 1e-12) + 1)
    else:
        k = int(n_components)
    if not 1 <= k <= p:
        raise ValueError(f"n_components must be in 1..{p}, not {k}")
    k = min(k, n - 2, p)
    return PcaModel(
        names=tuple(spec.tags),
        mean=mean,
        scale=scale,
        loadings=np.ascontiguousarray(vt[:k].T),
        eigenvalues=np.maximum(eig[:k], 1e-12 * eig[0]),
        residual_eigenvalues=eig[k:].copy(),
        n_train=n,
        confidence=confidence,
        t2_limit=t2_limit(n, k, confidence),
        spe_limit=spe_limit(eig[k:], confidence),
        inputs=spec,
    )
