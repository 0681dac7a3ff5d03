"""The config loaded in a short-lived child process, so that what parsing built and freed never
sits in the agent's heap.

Part of the shell. Reading a config builds far more than it keeps (tomllib's tables of every
[[tags]] entry, the problems' bookkeeping); CPython's small-object allocator cannot give a 1 MiB
arena back while one object in it lives, and the objects that stay (the tags) are spread over
the arenas the temporaries took. ``load_apart`` forks, the child runs ``agent.config.load`` and
pickles the Config (or the ConfigError) into a pipe as the parent unpickles it, and exits; the
parent holds only what it unpickled. The numbers are in docs/PERFORMANCE.md (start-up memory).

What crosses the pipe is the same graph of objects: pickle's memo keeps every object the config
shares (the tags' family tables, their tables of families, repeated texts) as one object, and the
floats, which pickle writes by value, go as persistent ids so that a float the tags share (the
default scale 1.0) stays one object too.

Where the child gives no answer (killed, crashed, a plugin's object in the Config that does not
pickle), the parent loads the config itself: slower, never wrong. Without ``os.fork``, or with
other threads running (a fork copies only the calling thread: a lock another thread held stays
locked in the child), it is just ``load``. Whatever the child prints goes to the same stdout and
stderr, written once: both are flushed before the fork, and the child leaves with ``os._exit``
(no atexit handlers, no buffers of the parent's flushed a second time). ``load`` itself prints
and logs nothing: ``Config.warnings`` come back with the Config, for the caller to print or log.
The detector families are imported by the parent before the fork, so a family that says
something on import says it once; a driver the config names is imported by the child (its
checks) and again by the parent when the agent builds it (the built-in drivers are silent).

Signals: the child keeps the dispositions it inherits, as if the load ran in the parent. Under
``plantwatch run`` a SIGTERM or SIGINT (to the agent, or to its whole process group or cgroup)
is recorded by the handlers ``cmd_run`` installed, and the load goes on in both processes: the
parent's read of the pipe and its wait are resumed after the handler (PEP 475), the child is
reaped, and the agent stops once up. Should the parent die first, the child's write fails when it
comes to it (EPIPE) and it exits.
"""

from __future__ import annotations

import contextlib
import gc
import io
import os
import pickle
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any, NoReturn

from agent.config import Config, ConfigError, load, registered_families


def load_apart(path: str | Path) -> Config:
    """``load(path)`` run in a child process: the same Config (or the same ConfigError), without
    the parser's leftovers in this process's heap. Call it before starting any thread."""
    if not hasattr(os, "fork") or threading.active_count() > 1:
        return load(path)
    # every detector family imported here, as load would: once (whatever a plugin prints on
    # import, it prints once), and already there for the child and for unpickling
    registered_families()
    _flush()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        _child(path, w)
    os.close(w)
    try:
        with os.fdopen(r, "rb") as pipe:
            result = _receive(pipe)
        os.waitpid(pid, 0)
    except BaseException:  # interrupted (KeyboardInterrupt): leave no child behind, running or a zombie
        _reap(pid)
        raise
    if result is None:  # the child died without an answer, or the answer does not unpickle
        return load(path)
    ok, value = result
    if ok:
        return value
    raise value


def _receive(pipe: io.BufferedReader) -> tuple[bool, Any] | None:
    """The child's answer read to its end: (True, Config) or (False, exception), or None."""
    collecting = gc.isenabled()
    gc.disable()  # every object unpickled stays: collections while they come find nothing (and take half the time)
    try:
        result = _Unpickler(pipe).load()
    except Exception:  # cut short (the child died writing) or not unpicklable here
        return None
    finally:
        if collecting:
            gc.enable()
    if (
        isinstance(result, tuple)
        and len(result) == 2
        and isinstance(result[1], Config if result[0] is True else BaseException)
    ):
        return result
    return None


def _reap(pid: int) -> None:
    with contextlib.suppress(OSError):
        os.kill(pid, signal.SIGKILL)
    with contextlib.suppress(ChildProcessError):
        os.waitpid(pid, 0)


def _child(path: str | Path, w: int) -> NoReturn:
    """The child's whole life, which ends in os._exit whatever happens."""
    code = 1
    gc.disable()  # it lives for one load: its garbage goes with it (the load ~10 % faster, the same peak)
    try:
        with os.fdopen(w, "wb") as pipe:
            _answer(path, pipe)
        code = 0
    except BaseException:  # a Config that does not pickle, the parent gone (EPIPE), an interrupt:
        pass  # the answer cut short, which the parent takes for none: it loads the config itself
    finally:
        with contextlib.suppress(BaseException):
            _flush()
        os._exit(code)


def _answer(path: str | Path, pipe: io.BufferedWriter) -> None:
    """The Config or the exception into the pipe, pickled as the parent unpickles it (the two
    overlap)."""
    try:
        cfg = load(path)
    except ConfigError as exc:
        _Pickler(pipe).dump((False, exc))
        return
    except Exception as exc:  # a plugin's bug: raised in the parent as it would have been there
        _Pickler(pipe).dump((False, _portable(exc)))
        return
    _Pickler(pipe).dump((True, cfg))  # raises midway when a plugin's object in it does not pickle


def _portable(exc: Exception) -> Exception:
    """``exc`` if it survives pickling, else a RuntimeError with its text; with the child's
    traceback as a note."""
    note = "raised while loading the config in a child process:\n" + "".join(
        traceback.format_tb(exc.__traceback__)
    )
    try:
        pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        exc = RuntimeError(f"{type(exc).__name__}: {exc}")
    exc.add_note(note.rstrip())
    return exc


def _flush() -> None:
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()


class _Pickler(pickle.Pickler):
    """Pickle at its highest protocol, each float object written once: its value the first time,
    its number after (pickle's memo covers containers and strings, not floats)."""

    def __init__(self, file: io.BufferedWriter):
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        # id -> (its number, the float: alive while its id is a key)
        self._floats: dict[int, tuple[int, float]] = {}

    def persistent_id(self, obj: Any) -> Any:
        if type(obj) is not float:
            return None
        known = self._floats.get(id(obj))
        if known is not None:
            return known[0]
        self._floats[id(obj)] = (len(self._floats), obj)
        return obj.hex()  # as text: a float in the id would itself be given an id


class _Unpickler(pickle.Unpickler):
    def __init__(self, file: io.BufferedReader):
        super().__init__(file)
        self._floats: list[float] = []

    def persistent_load(self, pid: Any) -> Any:
        if isinstance(pid, str):
            self._floats.append(float.fromhex(pid))
            return self._floats[-1]
        return self._floats[pid]
