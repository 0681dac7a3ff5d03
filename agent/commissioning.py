"""Commissioning: ``plantwatch check CONFIG --connect`` and ``--points``.

``--connect`` reads every configured point once from its device through the driver contract
(``Driver.read_once``: read-only, like the agent) and prints value, quality and the raw data per
tag, so a wrong address, type or word order shows before the plant goes live; the devices are
read at the same time, each bounded by its own timeout, and a device that does not answer
gives its tags its error while the others are read. ``--points`` prints the sign-off table
(agent/signoff.py). The shell half: it does the I/O and the printing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from agent import signoff
from drivers.base import COMM_FAIL, DeviceSpec, Quality, Reading

if TYPE_CHECKING:
    from agent.config import Config

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
#: the text table's columns
CONNECT_COLUMNS = ("tag", "address", "type", "value", "quality", "raw", "other orders / error")


def device_bound(device: DeviceSpec) -> float:
    """How long one device's read may take in all (connect, session, reads): its own timeout
    several times over, and never less than 10 s (opening a secure session takes a few round trips)."""
    return max(10.0, 6 * device.timeout_s)


async def read_all(cfg: Config) -> list[tuple[DeviceSpec, list[Reading]]]:
    """Every device's tags read once, devices in parallel, in config order. A driver that fails
    or overruns its bound gives each of its tags the reason."""
    import drivers

    async def one(device: DeviceSpec) -> tuple[DeviceSpec, list[Reading]]:
        specs = [t.spec for t in cfg.device_tags(device.name)]
        if not specs:
            return device, []
        bound = device_bound(device)
        try:
            cls = drivers.load(device.driver)
            for name in cls.loggers:  # the driver's library would log every failure; the table says it
                logging.getLogger(name).setLevel(logging.CRITICAL)
            return device, list(await asyncio.wait_for(cls.read_once(device, specs), bound))
        except TimeoutError:
            error = f"no answer within {bound:g} s"
        except Exception as exc:  # a plugin's bug must not hide the other devices' readings
            error = f"{type(exc).__name__}: {exc}"
        return device, [Reading(s, math.nan, COMM_FAIL, error=error) for s in specs]

    return list(await asyncio.gather(*(one(d) for d in cfg.devices)))


def _value(r: Reading, unit: str) -> str:
    if math.isnan(r.value):
        return "-"
    return f"{r.value:.7g} {unit}".strip()


def _quality(q: int) -> str:
    try:
        return Quality(q).name
    except ValueError:
        return str(q)


def _type(r: Reading, typed: bool) -> str:
    kind, scale = signoff.decoding(r.tag, typed)
    return f"{kind} {scale}".strip()


def _last(r: Reading) -> str:
    if r.error is not None:
        return r.error
    return ", ".join(f"{order} {v:.7g}" for order, v in r.alternatives.items())


def connect_lines(cfg: Config, results: Sequence[tuple[DeviceSpec, list[Reading]]]) -> list[str]:
    """The --connect table: per device a heading, then one aligned line per tag."""
    import drivers

    units = {t.name: t.unit for t in cfg.tags}
    cells: list[list[str]] = [list(CONNECT_COLUMNS)]
    spans = []
    for device, readings in results:
        start = len(cells)
        cls = _driver(drivers, device.driver)
        show, typed = (cls.show_address, cls.typed_by_config) if cls else (lambda a: a, True)
        for r in readings:
            cells.append([r.tag.name, show(r.tag.address), _type(r, typed), _value(r, units.get(r.tag.name, "")),
                          _quality(r.quality), r.raw or "-", _last(r) or "-"])
        spans.append((device, sum(r.good for r in readings), start, len(cells)))
    lines = signoff.aligned(cells)
    out = ["  " + lines[0]]
    for device, good, start, end in spans:
        out.append(f"device {device.name}: {device.driver} {device.url}: {good} of {end - start} tags GOOD")
        out += ["  " + line for line in lines[start:end]]
    return out


def _driver(drivers: Any, name: str):
    """The driver class, or None when it does not load (check has reported it)."""
    try:
        return drivers.load(name)
    except Exception:
        return None


def connect_json(results: Sequence[tuple[DeviceSpec, list[Reading]]]) -> str:
    rows = [{"device": d.name, "tag": r.tag.name, "address": r.tag.address, "type": r.tag.type,
             "order": r.tag.order, "value": None if math.isnan(r.value) else r.value, "quality": _quality(r.quality),
             "raw": r.raw, "alternatives": dict(r.alternatives), "error": r.error}
            for d, readings in results for r in readings]
    return json.dumps(rows, ensure_ascii=False, indent=2) + "\n"


def connect(cfg: Config, fmt: str = "text") -> int:
    """Read every point once and print it; 0 when every point read GOOD, else 1."""
    results = asyncio.run(read_all(cfg))
    if fmt == "json":
        sys.stdout.buffer.write(connect_json(results).encode("utf-8"))
    else:
        for line in connect_lines(cfg, results):
            print(line)
        failed = sum(not r.good for _, rs in results for r in rs)
        total = sum(len(rs) for _, rs in results)
        print(f"{total - failed} of {total} points GOOD" + (f", {failed} not" if failed else ""))
    return EXIT_OK if all(r.good for _, rs in results for r in rs) else EXIT_FAIL


def points(cfg: Config, fmt: str = "text") -> int:
    """Print the sign-off table."""
    import drivers

    classes = {d.name: _driver(drivers, d.driver) for d in cfg.devices}

    def address_of(spec):
        cls = classes.get(spec.device)
        return cls.show_address(spec.address) if cls else spec.address

    def typed(spec):
        cls = classes.get(spec.device)
        return cls.typed_by_config if cls else True

    rows = signoff.rows(cfg, address_of, typed)
    if fmt == "csv":
        text = signoff.to_csv(rows)
    elif fmt == "json":
        text = json.dumps(rows, ensure_ascii=False, indent=2) + "\n"
    else:
        text = "\n".join(signoff.table(rows)) + "\n"
    sys.stdout.buffer.write(text.encode("utf-8"))  # UTF-8 whatever the locale: a spreadsheet reads it
    return EXIT_OK
