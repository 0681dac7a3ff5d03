"""What a session that did not open means, and what to check: the words of the comm alarm and
of ``plantwatch check --connect`` for an OPC-UA device."""

from __future__ import annotations

import os
import socket
from urllib.parse import urlsplit

from drivers.opcua.config import DeviceOptions
from drivers.opcua.decode import error_text


def failure(exc: BaseException, opts: DeviceOptions) -> str:
    """Why the session did not open: the socket's own words where the socket failed, else the
    protocol's (a certificate not trusted, a wrong passphrase, a Bad status)."""
    where = urlsplit(opts.url)
    at = f"cannot connect to {where.hostname}:{where.port}"
    if isinstance(exc, socket.gaierror):
        return f"{at} (host name not found)"
    if isinstance(exc, TimeoutError):
        return f"{at} (no answer in time)"
    if isinstance(exc, OSError) and exc.errno:
        return f"{at} ({os.strerror(exc.errno).lower()})"
    return error_text(exc)


def connect_advice(opts: DeviceOptions, device: str) -> str:
    """What to check when the session never opened."""
    security = (f"that the server offers {opts.security_policy}/{opts.security_mode} and trusts the gateway's "
                f"certificate, and the trust list" if opts.secure else "that the server allows security None")
    return f"check the endpoint URL of device {device!r} ({opts.url}), that the server is on, {security}"


def never_connected(exc: BaseException, opts: DeviceOptions, device: str) -> str:
    """The text for a first connection that failed: where the socket failed, the reason, that
    it never connected, and what to check. A failure past the socket (a certificate, a key, a
    Bad status) explains itself and stays as it is."""
    if not isinstance(exc, OSError | TimeoutError):
        return error_text(exc)
    return f"{failure(exc, opts)} — never connected since start; {connect_advice(opts, device)}"
