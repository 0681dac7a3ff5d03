"""What a failed connection or an unanswered unit means, and what to check: the words of the
comm alarm, of ``plantwatch check --connect`` and of ``plantwatch probe``.

Pure functions of the endpoint, the unit and the exception the operating system gave, so an
engineer at a new plant reads ``cannot connect to 10.0.0.5:502 (connection refused) — never
connected since start; check …`` instead of a bare ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import errno
import socket

from drivers.modbus.address import Endpoint

_ERRNO_WORDS = {
    errno.ECONNREFUSED: "connection refused",
    errno.EHOSTUNREACH: "host unreachable",
    errno.ENETUNREACH: "network unreachable",
    errno.ETIMEDOUT: "timed out",
    errno.ECONNRESET: "connection reset",
    errno.ENOENT: "no such device",
    errno.EACCES: "permission denied",
    errno.EPERM: "permission denied",
    errno.EBUSY: "in use by another program",
    errno.ENODEV: "no such device",
    errno.ENXIO: "no such device",
}


def reason(exc: BaseException | None, timeout_s: float) -> str:
    """A few words for why a connection attempt failed; None or a cancellation (pymodbus' own
    connect timeout) means nothing answered in time."""
    if exc is None or isinstance(exc, asyncio.CancelledError | TimeoutError):
        return f"no answer within {timeout_s:g} s"
    if isinstance(exc, socket.gaierror):
        return "host name not found"
    words = _ERRNO_WORDS.get(getattr(exc, "errno", None) or 0)
    if words is None and isinstance(exc, OSError) and exc.args and isinstance(exc.args[0], int):
        words = _ERRNO_WORDS.get(exc.args[0])
    if words is not None:
        return words
    text = str(exc).strip()
    return text or type(exc).__name__


def place(endpoint: Endpoint) -> str:
    """Where the connection goes, as the engineer wrote it."""
    if endpoint.scheme == "rtu":
        return f"serial port {endpoint.path}"
    return f"{endpoint.host}:{endpoint.port}"


def cannot_connect(endpoint: Endpoint, exc: BaseException | None, timeout_s: float) -> str:
    """``cannot connect to 10.0.0.5:502 (connection refused)``."""
    verb = "cannot open" if endpoint.scheme == "rtu" else "cannot connect to"
    return f"{verb} {place(endpoint)} ({reason(exc, timeout_s)})"


def connect_advice(endpoint: Endpoint, why: str, device: str | None = None) -> str:
    """What to check when a connection never opened. ``device`` names the [[devices]] entry
    (None from the probe, where the URL is all there is)."""
    of = f" of device {device!r}" if device else ""
    if endpoint.scheme == "rtu":
        if "permission" in why:
            return (f"check that the user running plantwatch may open {endpoint.path} (group dialout, "
                    f"or the udev rule of the adapter)")
        if "no such device" in why:
            return f"check the serial port{of} ({endpoint.path}) and that the USB/serial adapter is plugged in"
        if "in use" in why:
            return f"check that no other program holds {endpoint.path}"
        return f"check the serial port{of} ({endpoint.path}) and its settings"
    what = "serial gateway" if endpoint.scheme == "rtu+tcp" else "PLC's Modbus TCP server"
    if why == "host name not found":
        return f"check the host name in the url{of} and the gateway's DNS"
    return f"check the address and port{of}, that the {what} is on, and the firewall"


def never_connected(endpoint: Endpoint, exc: BaseException | None, timeout_s: float,
                    device: str | None = None) -> str:
    """The full text for a connection that has not opened once since start."""
    why = reason(exc, timeout_s)
    return (f"{cannot_connect(endpoint, exc, timeout_s)} — never connected since start; "
            f"{connect_advice(endpoint, why, device)}")


def unit_advice(endpoint: Endpoint, unit: int, gateway: bool = False) -> str:
    """What to check when a unit never answered on an open connection. ``gateway``: a gateway
    answered for it (exception 0A/0B)."""
    if endpoint.scheme == "rtu":
        return (f"check the unit id ({unit}), the serial settings ({endpoint.baud} baud, parity {endpoint.parity}, "
                f"{endpoint.stopbits} stop bit{'s' if endpoint.stopbits != 1 else ''}) against the device's, "
                f"and the wiring (A/B swapped? termination?)")
    if endpoint.scheme == "rtu+tcp" or gateway:
        return (f"check the unit id ({unit}), the gateway's serial settings against the device's, "
                f"and the serial wiring behind the gateway")
    return (f"check the unit id ({unit}): the device at {place(endpoint)} accepts the connection but does not answer "
            f"this unit (is it the Modbus TCP server meant?)")


def unit_silent(endpoint: Endpoint, unit: int, what: str, answered_before: bool) -> str:
    """``unit 3 did not answer (no response within 1 s) — check the unit id`` for a unit never
    heard since start, else the short form of a unit that stopped answering."""
    if answered_before:
        return f"unit {unit}: {what}"
    gateway = "exception 0A" in what or "exception 0B" in what
    return (f"unit {unit} did not answer ({what}) — never answered since start; "
            f"{unit_advice(endpoint, unit, gateway)}")
