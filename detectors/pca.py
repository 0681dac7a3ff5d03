"""Multivariate monitoring with PCA: fit a model on normal operation, save and load it as a
versioned .npz file, and judge live ticks by Hotelling's T^2 and SPE (Q) with per-variable
contributions naming the tags that moved.

T^2 measures how unusual the operating point is inside the normal correlation structure; SPE
measures how far a tick leaves that structure (a broken correlation: a sensor drifting alone,
a valve no longer following its controller). Limits: T^2 from the F distribution, SPE from
Jackson and Mudholkar (1979).
"""

from __future__ import annotations

import math
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from scipy import stats

from detectors import _pca
from detectors.base import ConditionChange, Family, ModelError, Option
from detectors.inputs import InputSpec, InputStage
from detectors.kernel import as_batch

#: version of the .npz layout written by ``PcaModel.save``; 2 added the model's inputs (derived
#: inputs, lags) and the on/off delays ``plantwatch train`` chose
FORMAT_VERSION = 2

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

    def autoscale(self, X: np.ndarray) -> np.ndarray:
        return (np.asarray(X, dtype=np.float64) - self.mean) / self.scale

    def score(self, X: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """T^2 and SPE of raw rows X (n, p) in engineering units."""
        return self.statistics(self.autoscale(X))

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
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp.npz", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez(
                    f,
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
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    # linear: one check after the other, each naming the file
    @classmethod
    def load(cls, path: str | os.PathLike, names: Sequence[str] | None = None) -> PcaModel:
        """Read a model; with ``names``, also require it to be a model of exactly those tags
        in that order. Every problem raises PcaModelError naming the file."""
        path = Path(path)

        def fail(problem: str) -> PcaModelError:
            return PcaModelError(f"{path}: {problem}")

        if not path.is_file():
            raise fail("no such model file (fit it with `plantwatch train`)")
        try:
            with np.load(path, allow_pickle=False) as f:
                data = {k: f[k] for k in f.files}
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
            raise fail(f"not a readable .npz model file ({e})") from None
        if str(data.get("format", "")) != "plantwatch.pca":
            raise fail("not a plantwatch PCA model (no 'format' = plantwatch.pca)")
        version = int(data.get("version", -1))
        if version != FORMAT_VERSION:
            raise fail(f"model format version {version}, this build reads version {FORMAT_VERSION}: "
                       "fit it again with `plantwatch train`")
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
    return k * (n - 1) * (n + 1) / (n * (n - k)) * float(stats.f.ppf(confidence, k, n - k))


def spe_limit(residual_eigenvalues: np.ndarray, confidence: float) -> float:
    """Jackson–Mudholkar limit of the squared prediction error."""
    lam = np.asarray(residual_eigenvalues, dtype=np.float64)
    th1, th2, th3 = (float((lam**i).sum()) for i in (1, 2, 3))
    if th1 <= 0.0 or th2 <= 0.0:
        return math.inf  # no residual space left: SPE is zero by construction, not monitored
    h0 = 1.0 - 2.0 * th1 * th3 / (3.0 * th2 * th2)
    c = float(stats.norm.ppf(confidence))
    base = c * math.sqrt(2.0 * th2 * h0 * h0) / th1 + 1.0 + th2 * h0 * (h0 - 1.0) / (th1 * th1)
    return th1 * max(base, 0.0) ** (1.0 / h0)


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
    scale = X.std(axis=0, ddof=1)
    scale[~(scale > 1e-12 * np.maximum(1.0, np.abs(mean)))] = 1.0
    Z = (X - mean) / scale
    eig, vec = np.linalg.eigh(Z.T @ Z / (n - 1))
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


class _Monitor:
    """One model watching its tags: input rows (detectors.inputs), statistics, debounce."""

    def __init__(self, n_tags: int, model: PcaModel, tags: Sequence[int], params: Mapping[str, Any]):
        if len(tags) != len(model.names):
            raise ValueError(f"model has {len(model.names)} tags, {len(tags)} tag indices given")
        self.model = model
        self.tags = np.asarray(tags, dtype=np.int64)
        self.stage = InputStage(n_tags, model.spec, [int(t) for t in tags])
        # each input column's tag, by position in self.tags: contributions are summed per tag
        position = {name: i for i, name in enumerate(model.names)}
        self.source = np.array([position[s] for s in model.spec.sources()], dtype=np.intp)
        on = params.get("on_delay_s")
        off = params.get("off_delay_s")
        self.debounce = _pca.SeriesDebounce(model.on_delay_s if on is None else float(on),
                                            model.off_delay_s if off is None else float(off))
        self.top = int(params["top"])
        self.name = str(params["model"])
        self.t2_limit = model.t2_limit * float(params["t2_factor"])
        self.spe_limit = model.spe_limit * float(params["spe_factor"])

    def update(self, tag, value, ts, quality, kind: str) -> list[ConditionChange]:
        X, times = self.stage.rows(tag, value, ts, quality)
        if times.shape[0] == 0:
            return []
        Z = self.model.autoscale(X)
        t2, spe = self.model.statistics(Z)
        raw = ((t2 > self.t2_limit).astype(np.int8) + 2 * (spe > self.spe_limit).astype(np.int8))
        pos, prev, new = self.debounce.run(raw, np.ascontiguousarray(times))
        return [self._change(kind, Z[j], float(times[j]), int(a), int(b), t2[j], spe[j])
                for j, a, b in zip(pos.tolist(), prev.tolist(), new.tolist(), strict=True)]

    def _change(self, kind, z, when, prev, new, t2, spe) -> ConditionChange:
        level = new or prev
        c_t2, c_spe = self.model.contributions(z)
        # a tag's contribution: the sum over its inputs (level, derived inputs, lags)
        contrib = np.bincount(self.source, weights=c_spe if level >= 2 else c_t2, minlength=len(self.tags))
        order = np.argsort(-contrib)[: self.top]
        top = [int(self.tags[o]) for o in order]
        stat, limit = (spe, self.spe_limit) if level >= 2 else (t2, self.t2_limit)
        # the alarm belongs to the model, not to whichever tag contributes most at the moment:
        # it is anchored on the model's first tag and names the model and its top tags
        return ConditionChange(
            tag=int(self.tags[0]),
            kind=kind,
            level=PCA_LEVELS[level],
            active=new != 0,
            value=float(stat),
            limit=float(limit),
            ts=when,
            context={
                "model": self.name,
                "t2": float(t2),
                "spe": float(spe),
                "t2_limit": self.t2_limit,
                "spe_limit": self.spe_limit,
                "top_tags": top,
                "contributions": {int(self.tags[o]): float(contrib[o]) for o in order},
                "model_tags": [int(t) for t in self.tags],
            },
        )


class PcaFamily(Family):
    """Online PCA monitoring of one or more models, each over its own tags.

    Per tag, the config loader passes ``{"model": NAME, "file": PATH, "name": TAG_NAME}`` for
    every tag of every ``[[models]]`` entry of kind "pca", with the ``model_options`` of the
    model table (``on_delay_s``, ``off_delay_s``, ``top``, ``t2_factor``, ``spe_factor``, ...). The
    family loads each file once, checks it was fitted for exactly those tags, and judges each
    tick: level T2, SPE or T2+SPE while the statistic is over its limit. The change's ``tag``
    is the model's first tag (one alarm per model); ``context["model"]`` names the model and
    ``context["top_tags"]`` lists the top contributors by index.
    """

    name: ClassVar[str] = "pca"
    tag_key: ClassVar[str | None] = None
    model_options: ClassVar[Mapping[str, Option]] = {
        "confidence": Option(0.99, "in [0.5, 1), confidence of the fitted T² and SPE limits (`plantwatch train`)"),
        "variance": Option(0.9, "in (0, 1], explained variance that chooses the number of components"),
        "components": Option(0, "a fixed number of components (0 = chosen by variance)"),
        "on_delay_s": Option(None, ">= 0; T²/SPE must stay over its limit this long before the alarm is raised "
                                   "(not given: as `plantwatch train` chose, 0 without calibration)"),
        "off_delay_s": Option(None, ">= 0; T²/SPE must stay under its limit this long before the alarm clears "
                                    "(not given: as `plantwatch train` chose)"),
        "top": Option(3, "how many top contributing tags the alarm names"),
        "t2_factor": Option(1.0, "> 0, multiplier of the fitted T² limit"),
        "spe_factor": Option(1.0, "> 0, multiplier of the fitted SPE limit"),
    }
    #: per tag the loader passes the model's name, file and the tag's name with the model options
    options: ClassVar[Mapping[str, Option]] = {
        "model": Option(None, "the model's name", required=True),
        "file": Option(None, "the model file", required=True),
        "name": Option(None, "the tag's name", required=True),
        **model_options,
    }
    derived_inputs: ClassVar[bool] = True
    levels: ClassVar[tuple[str, ...]] = tuple(PCA_LEVELS.values())
    default_model: ClassVar[bool] = True
    alarm_code: ClassVar[str] = "8"

    @classmethod
    def check(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        numeric = {k: v for k, v in params.items() if k not in ("model", "file", "name")}
        problems += super().check(numeric)
        for key in ("model", "file", "name"):
            if not isinstance(params.get(key), str) or not params[key]:
                problems.append((key, "required (a non-empty string)"))
        return problems + cls._ranges(numeric)

    @classmethod
    def check_model(cls, options: Mapping[str, Any]) -> list[tuple[str, str]]:
        return super().check_model(options) + cls._ranges(options)

    @classmethod
    def _ranges(cls, params: Mapping[str, Any]) -> list[tuple[str, str]]:
        problems: list[tuple[str, str]] = []
        number = {k: v for k, v in params.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        if "confidence" in number and not 0.5 <= number["confidence"] < 1:
            problems.append(("confidence", f"must be in [0.5, 1), not {number['confidence']}"))
        if "variance" in number and not 0 < number["variance"] <= 1:
            problems.append(("variance", f"must be in (0, 1], not {number['variance']}"))
        c = number.get("components")
        if c is not None and (c != int(c) or c < 0):
            problems.append(("components", f"must be a whole number >= 0 (0 = chosen by variance), not {c!r}"))
        for key in ("on_delay_s", "off_delay_s"):
            v = params.get(key)
            if isinstance(v, (int, float)) and v < 0:
                problems.append((key, f"must be >= 0, not {v!r}"))
        for key in ("t2_factor", "spe_factor"):
            v = params.get(key)
            if isinstance(v, (int, float)) and v <= 0:
                problems.append((key, f"must be > 0, not {v!r}"))
        top = params.get("top")
        if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 1):
            problems.append(("top", f"must be a whole number >= 1, not {top!r}"))
        return problems

    def __init__(self, n_tags: int, params: Mapping[int, Mapping[str, Any]]):
        super().__init__(n_tags, params)
        groups: dict[tuple[str, str], list[int]] = {}
        for t, p in sorted(self.params.items()):
            groups.setdefault((p["model"], p["file"]), []).append(t)
        self.monitors: list[_Monitor] = []
        for (_, file), tags in groups.items():
            by_name = {self.params[t]["name"]: t for t in tags}
            model = PcaModel.load(file)
            missing = [n for n in model.names if n not in by_name]
            extra = [n for n in by_name if n not in model.names]
            if missing or extra:
                raise PcaModelError(
                    f"{file}: fitted for tags {list(model.names)}, but the config lists {list(by_name)}"
                )
            fixed = self.params[tags[0]].get("inputs")
            if fixed and not InputSpec.from_json(fixed).same_inputs(model.spec):
                raise PcaModelError(f"{file}: fitted with inputs {model.spec.describe()}, but the config gives "
                                    f"{InputSpec.from_json(fixed).describe()}: fit it again with `plantwatch train`")
            self.monitors.append(_Monitor(n_tags, model, [by_name[n] for n in model.names], self.params[tags[0]]))

    @classmethod
    def for_model(cls, n_tags: int, model: PcaModel, tags: Sequence[int], **params: Any) -> PcaFamily:
        """A family watching one in-memory model over the given tag indices (in model order)."""
        fam = cls.__new__(cls)
        Family.__init__(fam, n_tags, {})
        fam.monitors = [_Monitor(n_tags, model, tags, {**cls.defaults, **params})]
        return fam

    def update(
        self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray
    ) -> list[ConditionChange]:
        tag, value, ts, quality = as_batch(tag, value, ts, quality)
        changes: list[ConditionChange] = []
        for m in self.monitors:
            changes += m.update(tag, value, ts, quality, self.name)
        return changes

    @classmethod
    def describe(cls, level: str, active: bool, value: float, limit: float,
                 context: Mapping[str, Any]) -> str | None:
        """A model's alarm names the model, the statistic over its limit and the tags that
        contributed most (``context["top_tags"]``, by name once the alarm manager has them)."""
        model = context.get("model")
        if not active:
            return f"多变量模型 {model} 恢复 multivariate {cls.name} back to normal"
        stat = "SPE" if "SPE" in level else "T²"
        top = ", ".join(context.get("top_tags", []))
        return (f"多变量模型 {model} 异常 multivariate {cls.name} {level}: {stat} {value:.4g} > {limit:.4g}, "
                f"top contributors {top}")

    @classmethod
    def train(cls, data: Any, options: Mapping[str, Any], file: str) -> list[str]:
        """Fit from ``data`` (a detectors.calibrate.Training: raw columns, times and what the config
        fixes) with the model's ``confidence``, ``variance``, ``components`` and delays: with
        ``target_far`` > 0 calibrated (detectors.calibrate), else the distribution limits."""
        from detectors.calibrate import calibrate
        from detectors.inputs import table_rows

        tr = replace(data, components=int(options["components"]), confidence=float(options["confidence"]),
                      variance=float(options["variance"]), on_delay_s=options["on_delay_s"],
                      off_delay_s=options["off_delay_s"])
        if tr.target_far > 0:
            fitted, _, lines = calibrate(tr)
        else:
            spec = tr.spec if tr.spec is not None else InputSpec(tr.names)
            X, _ = table_rows(spec, tr.columns, tr.ts)
            fitted = fit(X, tr.names, confidence=tr.confidence, variance=tr.variance,
                         n_components=tr.components or None, inputs=spec)
            fitted = replace(fitted, on_delay_s=float(tr.on_delay_s or 0.0), off_delay_s=float(tr.off_delay_s or 0.0))
            lines = [f"  inputs: {spec.describe()} ({len(spec.columns())} columns), components {fitted.n_components}, "
                     f"T² limit {fitted.t2_limit:.4g}, SPE limit {fitted.spe_limit:.4g} at confidence {fitted.confidence}"]
        Path(file).parent.mkdir(parents=True, exist_ok=True)
        fitted.save(file)
        return lines
