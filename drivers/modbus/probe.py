"""``plantwatch probe``: read a range of a Modbus device once and show it decoded.

For integrators writing a config: which registers hold what, in which byte order. It only reads
(function codes 1-4) and asks for the device identification (43/14) when the device offers it.
"""

from __future__ import annotations

import re

from drivers.base import BYTE_ORDERS, VALUE_TYPES, DriverError
from drivers.modbus import diagnose
from drivers.modbus.address import (
    AREA_FC,
    BIT_AREAS,
    MAX_BITS,
    MAX_REGISTERS,
    WIDTH,
    modicon,
    parse_modicon,
    parse_url,
)
from drivers.modbus.decode import decode_words
from drivers.modbus.driver import exception_text
from drivers.modbus.link import ConnectFailed, LinkPool, NoAnswer

_SPEC = re.compile(r"^(co|di|ir|hr):(\d+)(?:-(\d+))?$")
_MODICON_SPEC = re.compile(r"^(\d{5,6})(?:-(\d{5,6}))?$")


def parse_spec(spec: str) -> tuple[str, int, int]:
    """``"hr:0-20"`` or, in Modicon references, ``"40001-40021"`` -> ("hr", 0, 21): area, first
    address (0-based), count (the range is inclusive)."""
    text = spec.strip()
    m = _SPEC.match(text)
    if m:
        area, first = m.group(1), int(m.group(2))
        last = int(m.group(3)) if m.group(3) is not None else first
    elif mm := _MODICON_SPEC.match(text):
        area, first = parse_modicon(mm.group(1))
        end_area, last = parse_modicon(mm.group(2)) if mm.group(2) else (area, first)
        if end_area != area:
            raise ValueError(f"{spec!r}: both ends must be in one area ({area} and {end_area} differ)")
    else:
        raise ValueError(f"{spec!r} is not a range: expected e.g. hr:0-20, ir:100, co:0-15 (0-based) "
                         f"or 40001-40021, 300101 (Modicon, 1-based)")
    if last < first or last > 65535:
        raise ValueError(f"{spec!r}: the range must go upwards and stay within 0..65535")
    return area, first, last - first + 1


async def probe(url: str, spec: str = "hr:0-20", type: str = "uint16", order: str = "ABCD",
                timeout: float = 2.0) -> list[str]:
    """Lines describing the device at ``url`` (``?unit=N`` selects the unit, default 1) and the
    values in ``spec`` decoded as ``type``/``order``. Raises ValueError for bad arguments and
    DriverError when the device cannot be reached."""
    endpoint, problems = parse_url(url)
    if problems:
        raise ValueError("; ".join(f"{k}: {m}" for k, m in problems))
    assert endpoint is not None
    if type not in VALUE_TYPES:
        raise ValueError(f"type {type!r} is not one of {', '.join(VALUE_TYPES)}")
    if order not in BYTE_ORDERS:
        raise ValueError(f"order {order!r} is not one of {', '.join(BYTE_ORDERS)}")
    area, first, count = parse_spec(spec)
    if area in BIT_AREAS:
        type = "bool"
    unit = endpoint.unit if endpoint.unit is not None else 1
    link = LinkPool.acquire(endpoint, timeout)
    lines = [f"{endpoint.describe()} unit {unit}"]
    try:
        try:
            await link.connect()
        except ConnectFailed as exc:
            why = diagnose.reason(exc.cause, exc.timeout_s)
            raise DriverError(f"{exc} — {diagnose.connect_advice(endpoint, why)}") from None
        async with link.lock:
            lines += await _identity(link, unit, timeout)
            lines += await _values(link, unit, timeout, area, first, count, type, order)
    finally:
        LinkPool.release(link)
    return lines


async def _identity(link, unit: int, timeout: float) -> list[str]:
    try:
        resp = await link.device_information(unit, timeout)
    except DriverError:
        return ["identification: no answer to 43/14"]
    if resp.isError():
        return [f"identification: {exception_text(int(resp.exception_code))}"]
    names = {0: "vendor", 1: "product code", 2: "revision", 3: "vendor url", 4: "product name", 5: "model name"}
    info = getattr(resp, "information", {}) or {}
    parts = []
    for key, value in sorted(info.items()):
        text = value.decode(errors="replace") if isinstance(value, bytes) else str(value)
        parts.append(f"{names.get(key, f'object {key}')}={text}")
    return ["identification: " + (", ".join(parts) if parts else "(empty)")]


async def _values(link, unit, timeout, area, first, count, type_, order) -> list[str]:
    size = MAX_BITS if area in BIT_AREAS else MAX_REGISTERS
    words: dict[int, int] = {}
    failed: list[str] = []
    for start in range(first, first + count, size):
        n = min(size, first + count - start)
        try:
            resp = await link.read(AREA_FC[area], start, n, unit, timeout)
        except NoAnswer as exc:
            raise DriverError(f"unit {unit} did not answer ({exc}) — {diagnose.unit_advice(link.endpoint, unit)}; "
                              f"?unit=N in the URL selects the unit") from None
        if resp.isError():
            code = int(resp.exception_code)
            hint = f" — {diagnose.unit_advice(link.endpoint, unit, gateway=True)}" if code in (10, 11) else ""
            failed.append(f"{area}:{start}-{start + n - 1}: {exception_text(code)}{hint}")
            continue
        data = resp.bits[:n] if area in BIT_AREAS else resp.registers
        words.update(zip(range(start, start + n), (int(v) for v in data), strict=False))
    last = first + count - 1
    lines = [f"{area}:{first}-{last} (Modicon {modicon(area, first)}-{modicon(area, last)}) as {type_} "
             f"{order if type_ != 'bool' else ''}".rstrip()]
    width = 1 if area in BIT_AREAS or type_ == "bool" else WIDTH[type_]
    for addr in range(first, first + count - width + 1, width):
        span = [words.get(a) for a in range(addr, addr + width)]
        if any(w is None for w in span):
            lines.append(f"  {area}:{addr:<6} (not readable)")
            continue
        if area in BIT_AREAS:
            lines.append(f"  {area}:{addr:<6} {span[0]}")
            continue
        raw = " ".join(f"{w:04X}" for w in span)
        if type_ == "bool":
            shown = f"{int(span[0] != 0)}  bits {span[0]:016b}"
        else:  # exact, also for 64-bit integers the float64 samples would round
            value = decode_words(span, type_, order)
            shown = f"{value:.7g}" if type_.startswith("float") else str(value)
        lines.append(f"  {area}:{addr:<6} {raw:<20} {shown}")
    return lines + failed
