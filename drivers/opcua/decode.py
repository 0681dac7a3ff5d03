"""OPC-UA DataValues and StatusCodes as arrays: values, source times, quality and overflow flags.

Pure functions of what the server sent; the subscription and the poll path both decode through
here, so a value means the same whichever way it arrived.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from asyncua import ua

from drivers.base import BAD, GOOD, UNCERTAIN

# StatusCode layout (OPC UA Part 4, 7.39): severity in bits 30-31, InfoType in bits 10-11
# (01 = DataValue), and for DataValue info the Overflow flag in bit 7.
_INFO_TYPE_MASK = 0x0C00
_INFO_TYPE_DATAVALUE = 0x0400
_OVERFLOW_BIT = 0x0080
# severity 0 Good, 1 Uncertain, 2 Bad, 3 (reserved) Bad
_SEVERITY_TO_QUALITY = np.array([GOOD, UNCERTAIN, BAD, BAD], dtype=np.uint8)


def status_name(code: int) -> str:
    try:
        return ua.StatusCode(code).name
    except Exception:
        return f"0x{code:08X}"


def error_text(exc: BaseException) -> str:
    """A one-line reason for a comm alarm; never includes secrets (exceptions carry none here)."""
    if isinstance(exc, ua.UaStatusCodeError):
        return f"{type(exc).__name__} ({status_name(exc.code)})"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def columns(dvs: Sequence[ua.DataValue], now: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(value float64, source time float64, status uint32) for decoded DataValues.

    The source timestamp is used when the server sent one, else the server timestamp, else the
    time of reception. Non-numeric values become NaN; their status is then forced to Bad.
    """
    n = len(dvs)
    raw = [dv.Value.Value if dv.Value is not None else None for dv in dvs]
    status = np.fromiter(
        (dv.StatusCode.value if dv.StatusCode is not None else 0 for dv in dvs), dtype=np.uint32, count=n
    )
    ts = np.fromiter(
        (
            (dv.SourceTimestamp or dv.ServerTimestamp).timestamp()
            if (dv.SourceTimestamp or dv.ServerTimestamp) is not None
            else now
            for dv in dvs
        ),
        dtype=np.float64,
        count=n,
    )
    try:
        values = np.array(raw, dtype=np.float64)
        if values.shape != (n,):
            raise ValueError("not scalar")
    except (TypeError, ValueError, OverflowError):
        values = np.empty(n, dtype=np.float64)
        for i, v in enumerate(raw):
            try:
                values[i] = float(v)
            except (TypeError, ValueError, OverflowError):
                values[i] = math.nan
                if v is not None:  # a string or array where a number was expected
                    status[i] = max(int(status[i]), ua.StatusCodes.BadTypeMismatch)
    return values, ts, status


def quality_of(status: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Quality per status code, and which codes carry the server's Overflow bit."""
    quality = _SEVERITY_TO_QUALITY[(status >> 30).astype(np.intp)]
    overflow = ((status & _INFO_TYPE_MASK) == _INFO_TYPE_DATAVALUE) & ((status & _OVERFLOW_BIT) != 0)
    quality[overflow & (quality == GOOD)] = UNCERTAIN
    return quality, overflow
