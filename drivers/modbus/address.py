"""Parsing and validating Modbus tag addresses, value types and device URLs.

Everything here is pure: it turns config text into small frozen objects or a message saying what
is wrong, so ``check()`` can report every problem at once and the runtime never re-parses text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from drivers.base import BYTE_ORDERS, VALUE_TYPES

#: area -> read function code. Only these four codes (plus 43/14 for identification in the
#: probe) are ever sent; see link.READ_FUNCTION_CODES.
AREA_FC = {"co": 1, "di": 2, "hr": 3, "ir": 4}
BIT_AREAS = frozenset({"co", "di"})
#: registers per value type
WIDTH = {"bool": 1, "int16": 1, "uint16": 1, "int32": 2, "uint32": 2, "float32": 2,
         "int64": 4, "uint64": 4, "float64": 4}
MAX_REGISTERS = 125  # Modbus application protocol v1.1b3, 6.3: at most 125 words per read
MAX_BITS = 2000  # ... and 2000 coils / discrete inputs
SCHEMES = ("tcp", "rtu", "rtu+tcp")

_ADDRESS = re.compile(r"^(co|di|ir|hr):(\d+)(?:\.(\d+))?$")
_MODICON = re.compile(r"^(\d{5,6})(?:\.(\d+))?$")
#: the leading digit of a Modicon (5- or 6-digit, 1-based) reference -> area
MODICON_AREA = {"0": "co", "1": "di", "3": "ir", "4": "hr"}
MODICON_DIGIT = {v: k for k, v in MODICON_AREA.items()}


@dataclass(frozen=True, slots=True)
class Point:
    """Where one tag lives: area, first address (0-based), bit within a register or -1, and
    how many addresses (registers, or 1 bit) the value spans."""

    area: str
    address: int
    bit: int
    type: str
    order: str
    width: int

    @property
    def end(self) -> int:
        return self.address + self.width


def parse_modicon(number: str) -> tuple[str, int]:
    """A Modicon reference, 1-based, its leading digit the area: ``"40001"`` -> ("hr", 0),
    ``"300010"`` -> ("ir", 9). Five digits reach register 9999 (``4xxxx``), six digits 65536
    (``4xxxxx``). ValueError says why not."""
    if not (len(number) in (5, 6) and number.isdigit()):
        raise ValueError(f"{number!r} is not a Modicon reference (5 or 6 digits, e.g. 40001)")
    area = MODICON_AREA.get(number[0])
    if area is None:
        raise ValueError(f"{number!r}: a Modicon reference starts with 0 (coil), 1 (discrete input), "
                         f"3 (input register) or 4 (holding register), not {number[0]}")
    n = int(number[1:])
    top = 9999 if len(number) == 5 else 65536
    if not 1 <= n <= top:
        first, last = (f"{number[0]}0001", f"{number[0]}9999") if len(number) == 5 else \
            (f"{number[0]}00001", f"{number[0]}65536")
        raise ValueError(f"{number!r} is outside {first}..{last} (Modicon references count from 1: "
                         f"{first} = {area}:0)")
    return area, n - 1


def modicon(area: str, address: int) -> str:
    """The Modicon reference of a 0-based address: 5 digits up to 9998, else 6."""
    n = address + 1
    return f"{MODICON_DIGIT[area]}{n:04d}" if n <= 9999 else f"{MODICON_DIGIT[area]}{n:05d}"


def parse_address(text: str) -> tuple[str, int, int]:
    """``"hr:100.3"`` -> ("hr", 100, 3); ``"co:7"`` -> ("co", 7, -1); the Modicon form
    ``"40101.3"`` -> ("hr", 100, 3). ValueError says why not."""
    m = _ADDRESS.match(text.strip()) if isinstance(text, str) else None
    if m:
        area, addr, bit = m.group(1), int(m.group(2)), m.group(3)
    elif isinstance(text, str) and (mm := _MODICON.match(text.strip())):
        (area, addr), bit = parse_modicon(mm.group(1)), mm.group(2)
    elif isinstance(text, str) and text.strip().isdigit():
        raise ValueError(f"{text!r}: a bare number names no area and could be 0- or 1-based; write hr:N, ir:N, co:N, "
                         f"di:N (0-based) or a 5- or 6-digit Modicon reference (40001 = hr:0)")
    else:
        raise ValueError(f"{text!r} is not a Modbus address: expected co:N, di:N, ir:N, hr:N or hr:N.B (0-based), "
                         f"or a Modicon reference such as 40001 (= hr:0) or 400001")
    if addr > 65535:
        raise ValueError(f"address {addr} is outside 0..65535")
    if bit is None:
        return area, addr, -1
    if area in BIT_AREAS:
        raise ValueError(f"{area} addresses are single bits already; drop the .{bit}")
    if int(bit) > 15:
        raise ValueError(f"bit {bit} is outside 0..15 (a register has 16 bits)")
    return area, addr, int(bit)


def make_point(address: str, type: str, order: str) -> tuple[Point | None, list[tuple[str, str]]]:
    """The Point for a tag, or None and the (key, message) problems that prevent it."""
    problems: list[tuple[str, str]] = []
    if type not in VALUE_TYPES:
        problems.append(("type", f"{type!r} is not one of {', '.join(VALUE_TYPES)}"))
    if order not in BYTE_ORDERS:
        problems.append(("order", f"{order!r} is not one of {', '.join(BYTE_ORDERS)}"))
    try:
        area, addr, bit = parse_address(address)
    except ValueError as exc:
        problems.append(("address", str(exc)))
        return None, problems
    if problems:
        return None, problems
    if area in BIT_AREAS and type != "bool":
        return None, [("type", f"{area} holds single bits: type must be bool, not {type}")]
    if bit >= 0 and type != "bool":
        return None, [("type", f"a bit address ({address}) needs type bool, not {type}")]
    width = 1 if area in BIT_AREAS else WIDTH[type]
    if addr + width - 1 > 65535:
        return None, [("address", f"{type} at {addr} spans {width} registers and runs past 65535")]
    return Point(area, addr, bit, type, order, width), []


@dataclass(frozen=True)
class Endpoint:
    """Where a device is reached. ``key`` identifies the physical line: devices with equal keys
    on rtu/rtu+tcp share one client (a bus carries one transaction at a time)."""

    scheme: str  # tcp | rtu | rtu+tcp
    host: str = ""
    port: int = 502
    path: str = ""  # serial device for rtu
    baud: int = 9600
    parity: str = "N"
    stopbits: int = 1
    bytesize: int = 8
    unit: int | None = None  # from ?unit= (probe URLs)

    @property
    def shared(self) -> bool:
        return self.scheme != "tcp"

    @property
    def key(self) -> tuple:
        if self.scheme == "rtu":
            return ("rtu", self.path)
        return (self.scheme, self.host, self.port)

    def describe(self) -> str:
        if self.scheme == "rtu":
            return f"rtu://{self.path} {self.baud} {self.bytesize}{self.parity}{self.stopbits}"
        return f"{self.scheme}://{self.host}:{self.port}"


SERIAL_KEYS = {"baud": int, "parity": str, "stopbits": int, "bytesize": int}


def _serial_fields(path: str, query: dict, options: dict, fields: dict) -> list[tuple[str, str]]:
    """Fill ``fields`` with an rtu:// URL's serial device and settings; the problems found."""
    problems: list[tuple[str, str]] = []
    if not path:
        problems.append(("url", "rtu:// needs a serial device, e.g. rtu:///dev/ttyUSB0?baud=9600&parity=E"))
    fields["path"] = path
    for key, conv in SERIAL_KEYS.items():
        raw = query.get(key)
        if key in options:
            if raw is not None and str(options[key]) != raw:
                problems.append((key, f"{options[key]!r} contradicts {key}={raw} in the url"))
            raw = options[key]
        if raw is None:
            continue
        try:
            fields[key] = conv(raw)
        except (TypeError, ValueError):
            problems.append((key, f"{raw!r} is not a valid {key}"))
    p = str(fields.get("parity", "N")).upper()
    fields["parity"] = p
    if p not in ("N", "E", "O"):
        problems.append(("parity", f"{p!r} must be N, E or O"))
    if fields.get("stopbits", 1) not in (1, 2):
        problems.append(("stopbits", "must be 1 or 2"))
    if fields.get("bytesize", 8) not in (7, 8):
        problems.append(("bytesize", "must be 7 or 8"))
    if not 300 <= fields.get("baud", 9600) <= 4_000_000:
        problems.append(("baud", "must be between 300 and 4000000"))
    return problems


def parse_url(url: str, options: dict | None = None) -> tuple[Endpoint | None, list[tuple[str, str]]]:
    """Parse a device URL; serial settings come from the query or the device's own keys
    (``baud``, ``parity``, ``stopbits``, ``bytesize``). Returns problems as (key, message)."""
    problems: list[tuple[str, str]] = []
    options = dict(options or {})
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return None, [("url", f"cannot parse {url!r}: {exc}")]
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        return None, [("url", f"scheme {parts.scheme or '(none)'!r} is not tcp://, rtu:// or rtu+tcp://")]
    query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    fields: dict = {"scheme": scheme}
    unknown = set(query) - set(SERIAL_KEYS) - {"unit"}
    if unknown:
        problems.append(("url", f"unknown query parameter(s) {', '.join(sorted(unknown))}"))
    if "unit" in query:
        try:
            fields["unit"] = int(query.pop("unit"))
            if not 0 <= fields["unit"] <= 255:
                raise ValueError
        except ValueError:
            problems.append(("url", "unit must be an integer 0..255"))
    if scheme == "rtu":
        problems += _serial_fields(parts.netloc + parts.path if parts.netloc else parts.path, query, options, fields)
    else:
        if query.keys() & SERIAL_KEYS.keys():
            problems.append(("url", f"serial settings do not apply to {scheme}://"))
        try:
            port = parts.port
        except ValueError:
            return None, problems + [("url", f"bad port in {url!r}")]
        if not parts.hostname:
            problems.append(("url", f"{scheme}:// needs a host, e.g. {scheme}://192.168.1.10:502"))
        fields["host"] = parts.hostname or ""
        fields["port"] = port if port is not None else 502
    if problems:
        return None, problems
    return Endpoint(**fields), []
