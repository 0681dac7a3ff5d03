"""A virtual serial cable: two linked pseudo-terminals made by socat (RTU tests without hardware)."""

from __future__ import annotations

import os
import re
import subprocess
import time
from contextlib import contextmanager


@contextmanager
def serial_pair():
    """Yield (device_end, server_end) pty paths; the link lives until the block ends."""
    proc = subprocess.Popen(["socat", "-d", "-d", "pty,raw,echo=0", "pty,raw,echo=0"],
                            stderr=subprocess.PIPE, text=True)
    paths: list[str] = []
    try:
        deadline = time.monotonic() + 10
        while len(paths) < 2 and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if not line:
                break
            m = re.search(r"PTY is (\S+)", line)
            if m:
                paths.append(m.group(1))
        if len(paths) < 2:
            raise RuntimeError("socat did not create a pty pair")
        while not all(os.path.exists(p) for p in paths):
            time.sleep(0.01)
        yield paths[0], paths[1]
    finally:
        proc.terminate()
        proc.wait(5)
