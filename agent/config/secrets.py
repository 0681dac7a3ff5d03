"""The secret files a config names (keys, IVs, passwords, appsecrets) and whether anyone but
their owner can read them.

A secret file readable by group or others is a warning, not a problem: the agent still starts
(and logs it), ``plantwatch check`` prints it, and ``plantwatch check --strict`` refuses the
config over it. The files are found by their key names wherever they appear — [uplink],
[[uplinks]], [provincial], [alarm_system] (the API token, the commands' HMAC key) and each
device's own keys — so a driver's secret files are checked
without the agent knowing the driver.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from agent.config.schema import item

#: key names that hold the path of a secret (a client key's certificate, ``cert_file``, is public)
SECRET_KEYS = ("password_file", "key_file", "key_password_file", "sm4_key_file", "iv_file", "appsecret_file",
               "api_token_file", "command_key_file", "console_key_file", "console_users_file")


def secret_files(data: Mapping[str, Any], base: Path) -> Iterator[tuple[str, Path]]:
    """(config path, file) of every secret file the document names. [uplink], [[uplinks]] and
    [provincial] paths resolve against ``base`` as the config reads them; a device's are handed
    to its driver as written."""
    tables: list[tuple[str, Any, Path | None]] = [("uplink", data.get("uplink"), base),
                                                   ("provincial", data.get("provincial"), base),
                                                   ("alarm_system", data.get("alarm_system"), base)]
    for name, rel in (("uplinks", base), ("devices", None)):
        entries = data.get(name)
        if isinstance(entries, list):
            tables.extend((item(name, i, e), e, rel) for i, e in enumerate(entries))
    for path, table, rel in tables:
        if not isinstance(table, dict):
            continue
        for key in SECRET_KEYS:
            value = table.get(key)
            if isinstance(value, str) and value:
                yield f"{path}.{key}", (rel / value if rel is not None else Path(value))


def permission_warnings(files: Iterator[tuple[str, Path]]) -> list[str]:
    """One line per secret file that group or others may read (or write)."""
    out = []
    for where, file in files:
        try:
            st = os.stat(file)
        except OSError:
            continue  # a missing file is the config's problem, reported where it is read
        loose = st.st_mode & 0o077
        if loose and stat.S_ISREG(st.st_mode):
            who = " and ".join(w for w, bits in (("group", 0o070), ("others", 0o007)) if loose & bits)
            how = "readable" if loose & 0o044 else "writable"
            out.append(f"{where}: {file} is {how} by {who} (mode {stat.S_IMODE(st.st_mode):04o}); "
                       f"a secret belongs to the plantwatch user alone: chmod 600 {file}")
    return out
