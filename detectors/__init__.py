"""Detection: detector families over struct-of-arrays state, the batched engine, models.

Knows no protocol, broker or clock: it takes arrays (tag indices, values, times, quality) and
returns condition changes, so replay and the live agent share it.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import EntryPoint, entry_points

GROUP = "plantwatch.detectors"


@cache
def _registered() -> dict[str, EntryPoint]:
    # Scanning the installed distributions costs milliseconds, and every config load asks for
    # each family; what is installed does not change while the process runs.
    return {ep.name: ep for ep in entry_points(group=GROUP)}


def available() -> dict[str, str]:
    """Family name -> 'module:Class' for every registered detector family (built-ins included)."""
    return {name: ep.value for name, ep in _registered().items()}


def load(name: str):
    """The detector family class registered under ``name``; KeyError when none is."""
    from detectors.base import Family

    cls = _registered()[name].load()
    if not (isinstance(cls, type) and issubclass(cls, Family)):
        raise TypeError(f"entry point {GROUP}:{name} is not a detectors.base.Family subclass")
    return cls


KERNEL_MODULES = ("detectors._csv", "detectors._expr", "detectors._kernels", "detectors._pca")


def kernels_build() -> dict[str, dict[str, str] | str]:
    """Each compiled kernel module's build (Cython, numpy, compiler, flags, time of compilation,
    file), or why it does not import."""
    import importlib

    out: dict[str, dict[str, str] | str] = {}
    for name in KERNEL_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            out[name] = f"not importable: {exc}"
            continue
        out[name] = {**getattr(module, "BUILD", {"cython": "unknown"}), "file": str(module.__file__)}
    return out
