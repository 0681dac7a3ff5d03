"""What the multivariate kinds share: their model files (versioned .npz, written atomically and
read back with the checks every kind makes first: the file, its format and its version), the
tags of each model, and the family that runs one monitor per model and words its alarms."""

from __future__ import annotations

import os
import tempfile
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from detectors.base import ConditionChange, Family, Statistic
from detectors.kernel import as_batch


def save_npz(path: str | os.PathLike, **arrays: Any) -> None:
    """Write ``arrays`` atomically: a synced temp file renamed into place, never half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name, suffix=".tmp.npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_npz(path: Path, fmt: str, version: int, fail: Callable[[str], Exception], kind: str,
             version_words: str) -> dict[str, np.ndarray]:
    """Every array of a model file of format ``fmt`` and ``version``; a missing, unreadable, other
    or older file raises ``fail(problem)``. ``kind`` names the model kind in the messages and
    ``version_words`` starts the one about another version."""
    if not path.is_file():
        raise fail("no such model file (fit it with `plantwatch train`)")
    try:
        with np.load(path, allow_pickle=False) as f:
            data = {k: f[k] for k in f.files}
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        raise fail(f"not a readable .npz model file ({e})") from None
    if str(data.get("format", "")) != fmt:
        raise fail(f"not a plantwatch {kind} model (format {str(data.get('format', 'none'))!r}, "
                   f"expected {fmt!r}): fit it again with `plantwatch train`")
    got = int(data.get("version", -1))
    if got != version:
        raise fail(f"{version_words} {got}, this build reads version {version}: fit it again with `plantwatch train`")
    return data


def model_tags(params: Mapping[int, Mapping[str, Any]]) -> dict[str, list[int]]:
    """Model file -> the tags of that model, in tag order: a kind's family watches every model
    of its kind, each model's tags carrying the model's name and file in their parameters."""
    groups: dict[tuple[str, str], list[int]] = {}
    for t, p in sorted(params.items()):
        groups.setdefault((p["model"], p["file"]), []).append(t)
    return {file: tags for (_, file), tags in groups.items()}


class ModelFamily(Family):
    """A multivariate kind: one monitor per model (``self.monitors``, each with
    ``update(tag, value, ts, quality, family_name)`` and ``recent``, the statistics of its last
    update, replaced at each), every batch handed to each."""

    #: how the alarm text calls the kind, after 多变量模型
    words: ClassVar[str] = "multivariate"
    monitors: list

    def update(self, tag: np.ndarray, value: np.ndarray, ts: np.ndarray, quality: np.ndarray
               ) -> list[ConditionChange]:
        tag, value, ts, quality = as_batch(tag, value, ts, quality)
        changes: list[ConditionChange] = []
        for m in self.monitors:
            changes += m.update(tag, value, ts, quality, self.name)
        return changes

    def restart(self, model: str) -> tuple[float, float, int] | None:
        """What a restored alarm of ``model`` needs before the model can raise it again: (the
        on-delay in force, the config's or the one the model file holds, seconds of warm-up of
        its derived inputs, ticks of its past); None: no such model here."""
        return next((m.restart for m in self.monitors if m.name == model), None)

    def last_statistics(self) -> list[Statistic]:
        return [s for m in self.monitors for s in m.recent]

    @classmethod
    def describe(cls, level: str, active: bool, value: float, limit: float,
                 context: Mapping[str, Any]) -> str | None:
        """A model's alarm names the model, the statistic over its limit and the tags that
        contributed most (``context["top_tags"]``, by name once the alarm manager has them)."""
        model = context.get("model")
        if not active:
            return f"多变量模型 {model} 恢复 {cls.words} {cls.name} back to normal"
        stat = "SPE" if "SPE" in level else "T²"
        top = ", ".join(context.get("top_tags", []))
        return (f"多变量模型 {model} 异常 {cls.words} {cls.name} {level}: {stat} {value:.4g} > {limit:.4g}, "
                f"top contributors {top}")
