"""OPC-UA device and tag options: parsed and checked once, at config load.

Everything the driver needs at run time is a plain, validated value here, so the connection and
subscription code never has to second-guess a config key.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from asyncua import ua

from drivers.base import DeviceSpec, Problem, TagSpec

MODES = ("subscribe", "poll")
SECURITY_POLICIES = ("None", "Basic256Sha256", "Aes128Sha256RsaOaep", "Aes256Sha256RsaPss")
SECURITY_MODES = ("None", "Sign", "SignAndEncrypt")

DEVICE_KEYS = frozenset(
    {
        "mode",
        "publishing_interval_ms",
        "sampling_interval_ms",
        "queue_size",
        "deadband_abs",
        "deadband_percent",
        "batch_size",
        "security_policy",
        "security_mode",
        "cert_file",
        "key_file",
        "key_password_file",
        "application_uri",
        "trust",
        "username",
        "password_file",
        "session_timeout_s",
        "reconnect_max_s",
        "max_pending_samples",
        "allow_insecure_login",
    }
)
TAG_KEYS = frozenset({"sampling_interval_ms", "queue_size", "deadband_abs", "deadband_percent"})


@dataclass(frozen=True)
class TagOptions:
    """How one tag is monitored (subscribe mode) or read (poll mode)."""

    node_id: ua.NodeId
    sampling_interval_ms: float
    queue_size: int
    deadband_abs: float | None
    deadband_percent: float | None


@dataclass(frozen=True)
class DeviceOptions:
    """One OPC-UA device after validation."""

    url: str
    mode: str
    publishing_interval_ms: float
    batch_size: int
    security_policy: str
    security_mode: str
    cert_file: Path | None
    key_file: Path | None
    key_password_file: Path | None
    application_uri: str | None
    trust: tuple[Path, ...]
    username: str | None
    password_file: Path | None
    session_timeout_s: float
    reconnect_max_s: float
    max_pending_samples: int
    timeout_s: float
    interval_s: float
    tags: tuple[TagOptions, ...] = field(default_factory=tuple)

    @property
    def secure(self) -> bool:
        return self.security_policy != "None"


def _number(opts: Mapping[str, Any], key: str, default: float | None, problems: list[Problem],
            tag: TagSpec | None = None, *, minimum: float = 0.0, integer: bool = False,
            above: bool = False) -> Any:
    """A numeric option; records a problem (and returns the default) when it is not valid."""
    if key not in opts:
        return default
    value = opts[key]
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    if ok and integer and not float(value).is_integer():
        ok = False
    if ok and (value <= minimum if above else value < minimum):
        ok = False
    if not ok:
        kind = "an integer" if integer else "a number"
        bound = f"> {minimum:g}" if above else f">= {minimum:g}"
        problems.append(Problem(key, f"must be {kind} {bound}, got {value!r}", tag))
        return default
    return int(value) if integer else float(value)


def _path(opts: Mapping[str, Any], key: str, problems: list[Problem]) -> Path | None:
    if key not in opts:
        return None
    value = opts[key]
    if not isinstance(value, str) or not value:
        problems.append(Problem(key, f"must be a file path, got {value!r}"))
        return None
    path = Path(value)
    if not path.is_file():
        problems.append(Problem(key, f"file not found: {value}"))
    return path


def parse_node_id(address: str) -> ua.NodeId:
    """A tag address ("ns=2;s=R101.TI01", "ns=2;i=5", "i=2258", "ns=3;g=...", "ns=1;b=...") as NodeId.

    Raises ValueError with a readable reason when the address is not a node id.
    """
    text = address.strip()
    if not text or "=" not in text:
        raise ValueError(f"not an OPC-UA node id: {address!r} (expected e.g. \"ns=2;s=R101.TI01\" or \"ns=2;i=5\")")
    try:
        return ua.NodeId.from_string(text)
    except Exception as exc:  # asyncua raises several types for malformed ids
        raise ValueError(
            f"not an OPC-UA node id: {address!r} ({exc}); expected e.g. \"ns=2;s=R101.TI01\" or \"ns=2;i=5\""
        ) from None


def _check_url(device: DeviceSpec, problems: list[Problem]) -> None:
    url = urlparse(device.url)
    if url.scheme != "opc.tcp":
        problems.append(Problem("url", f"must start with opc.tcp:// for the opcua driver, got {device.url!r}"))
    elif not url.hostname:
        problems.append(Problem("url", f"has no host: {device.url!r}"))
    else:
        try:
            port = url.port
        except ValueError:
            problems.append(Problem("url", f"has an invalid port: {device.url!r}"))
        else:
            if port is None:
                problems.append(Problem("url", f"has no port (OPC-UA usually listens on 4840): {device.url!r}"))
    if url.username or url.password:
        problems.append(Problem("url", "must not carry credentials; use username and password_file"))


def _deadbands(opts: Mapping[str, Any], problems: list[Problem],
               tag: TagSpec | None = None) -> tuple[float | None, float | None]:
    """deadband_abs and deadband_percent of a device or a tag: at most one, percent 0..100."""
    dead_abs = _number(opts, "deadband_abs", None, problems, tag)
    dead_pct = _number(opts, "deadband_percent", None, problems, tag)
    if dead_pct is not None and dead_pct > 100:
        problems.append(Problem("deadband_percent", f"must be 0..100, got {dead_pct!r}", tag))
    if dead_abs is not None and dead_pct is not None:
        problems.append(Problem("deadband_percent", "give deadband_abs or deadband_percent, not both", tag))
    return dead_abs, dead_pct


def _security(opts: Mapping[str, Any], problems: list[Problem]) -> dict[str, Any]:
    """security_policy, security_mode and the client certificate, key and application URI."""
    policy = opts.get("security_policy", "None")
    if policy not in SECURITY_POLICIES:
        problems.append(Problem("security_policy", f"must be one of {', '.join(SECURITY_POLICIES)}, got {policy!r}"))
        policy = "None"
    smode = opts.get("security_mode", "None" if policy == "None" else "SignAndEncrypt")
    if smode not in SECURITY_MODES:
        problems.append(Problem("security_mode", f"must be one of {', '.join(SECURITY_MODES)}, got {smode!r}"))
    elif (policy == "None") != (smode == "None"):
        problems.append(Problem(
            "security_mode",
            f"{smode!r} does not go with security_policy {policy!r} (None goes only with None)",
        ))
    cert_file = _path(opts, "cert_file", problems)
    key_file = _path(opts, "key_file", problems)
    key_password_file = _path(opts, "key_password_file", problems)
    if policy != "None":
        for key, value in (("cert_file", cert_file), ("key_file", key_file)):
            if value is None and key not in opts:
                problems.append(Problem(key, f"is required with security_policy {policy!r} "
                                             "(make one with `plantwatch opcua-cert --out DIR`)"))
    _check_client_files(cert_file, key_file, key_password_file, problems)
    app_uri = opts.get("application_uri")
    if app_uri is not None and (not isinstance(app_uri, str) or not app_uri):
        problems.append(Problem("application_uri", f"must be a non-empty string, got {app_uri!r}"))
        app_uri = None
    return {"security_policy": policy, "security_mode": smode if smode in SECURITY_MODES else "None",
            "cert_file": cert_file, "key_file": key_file, "key_password_file": key_password_file,
            "application_uri": app_uri}


def _check_client_files(cert_file: Path | None, key_file: Path | None, key_password_file: Path | None,
                        problems: list[Problem]) -> None:
    if cert_file is not None and cert_file.is_file():
        from drivers.opcua.certs import load_certificate

        try:
            load_certificate(cert_file)
        except Exception as exc:
            problems.append(Problem("cert_file", f"not a DER or PEM certificate: {cert_file} ({exc})"))
    if (key_file is not None and key_file.is_file()
            and (key_password_file is None or key_password_file.is_file())):
        # decrypting here lets `plantwatch check` report a wrong passphrase before the gateway runs
        from drivers.opcua.security import ClientKeyError, load_client_key

        try:
            load_client_key(key_file, key_password_file)
        except ClientKeyError as exc:
            problems.append(Problem(exc.key, str(exc)))


def _trust(opts: Mapping[str, Any], problems: list[Problem]) -> tuple[Path, ...]:
    """The server certificates trusted beyond the OS store: each a readable certificate file."""
    trust_raw = opts.get("trust", [])
    if isinstance(trust_raw, str):
        trust_raw = [trust_raw]
    trust: list[Path] = []
    if not isinstance(trust_raw, list) or not all(isinstance(t, str) and t for t in trust_raw):
        problems.append(Problem("trust", f"must be a list of certificate file paths, got {trust_raw!r}"))
        return ()
    from drivers.opcua.certs import load_certificate

    for i, item in enumerate(trust_raw):
        path = Path(item)
        if not path.is_file():
            problems.append(Problem(f"trust[{i}]", f"file not found: {item}"))
            continue
        try:
            load_certificate(path)
        except Exception as exc:
            problems.append(Problem(f"trust[{i}]", f"not a DER or PEM certificate: {item} ({exc})"))
            continue
        trust.append(path)
    return tuple(trust)


def _credentials(opts: Mapping[str, Any], problems: list[Problem]) -> tuple[str | None, Path | None]:
    """username and password_file go together; a password is never accepted inline."""
    username = opts.get("username")
    if username is not None and (not isinstance(username, str) or not username):
        problems.append(Problem("username", f"must be a non-empty string, got {username!r}"))
        username = None
    password_file = _path(opts, "password_file", problems)
    if "password" in opts:
        problems.append(Problem("password", "passwords are not accepted inline; put it in a file and set password_file"))
    if username and "password_file" not in opts:
        problems.append(Problem("password_file", "is required with username"))
    if password_file is not None and not username:
        problems.append(Problem("username", "is required with password_file"))
    return username, password_file


def _insecure_login(opts: Mapping[str, Any], policy: str, username: str | None, trust: tuple[Path, ...],
                    problems: list[Problem]) -> None:
    """Under security_policy None a password crosses the plant LAN in clear to a server nobody
    checked, and a trust list is never consulted: both only with allow_insecure_login = true."""
    allow = opts.get("allow_insecure_login", False)
    if not isinstance(allow, bool):
        problems.append(Problem("allow_insecure_login", f"must be true or false, got {allow!r}"))
        allow = False
    if policy != "None" or allow:
        return
    if username:
        problems.append(Problem("username", "with security_policy None the password is sent in clear to an "
                                "unverified server; use a security policy, or set allow_insecure_login = true"))
    if trust:
        problems.append(Problem("trust", "is not used with security_policy None (the server's certificate is "
                                "never checked); use a security policy, or set allow_insecure_login = true"))


def _tag_options(tag: TagSpec, publishing: float, sampling: float | None, queue_size: int | None,
                 deadbands: tuple[float | None, float | None], problems: list[Problem]) -> TagOptions:
    """How one tag is monitored: its own options, else the device's."""
    try:
        node_id = parse_node_id(tag.address)
    except ValueError as exc:
        problems.append(Problem("address", str(exc), tag))
        node_id = ua.NodeId()
    t = tag.options
    t_sampling = _number(t, "sampling_interval_ms", sampling, problems, tag)
    t_queue = _number(t, "queue_size", queue_size, problems, tag, minimum=1, integer=True)
    t_abs, t_pct = _deadbands(t, problems, tag)
    if t_abs is None and t_pct is None:
        t_abs, t_pct = deadbands
    si = t_sampling if t_sampling is not None else publishing
    # A queue that holds the samples of two publishing intervals means the server does not
    # have to discard a value when one publish is late.
    qs = t_queue if t_queue is not None else max(2, 2 * math.ceil(publishing / max(si, 1.0)))
    return TagOptions(node_id, si, qs, t_abs, t_pct)


def parse(device: DeviceSpec, tags: Sequence[TagSpec]) -> tuple[DeviceOptions | None, list[Problem]]:
    """Validate a device and its tags; return the options (None when unusable) and every problem."""
    problems: list[Problem] = []
    opts = device.options
    _check_url(device, problems)
    mode = opts.get("mode", "subscribe")
    if mode not in MODES:
        problems.append(Problem("mode", f"must be one of {', '.join(MODES)}, got {mode!r}"))
        mode = "subscribe"
    publishing = _number(opts, "publishing_interval_ms", device.interval_s * 1000.0, problems, above=True)
    sampling = _number(opts, "sampling_interval_ms", None, problems)
    queue_size = _number(opts, "queue_size", None, problems, minimum=1, integer=True)
    deadbands = _deadbands(opts, problems)
    batch_size = _number(opts, "batch_size", 1000, problems, minimum=1, integer=True)
    session_timeout = _number(opts, "session_timeout_s", 60.0, problems, minimum=1.0)
    reconnect_max = _number(opts, "reconnect_max_s", 30.0, problems, above=True)
    max_pending = _number(opts, "max_pending_samples", 1_000_000, problems, minimum=1, integer=True)
    security = _security(opts, problems)
    trust = _trust(opts, problems)
    username, password_file = _credentials(opts, problems)
    _insecure_login(opts, security["security_policy"], username, trust, problems)
    tag_opts = tuple(_tag_options(tag, publishing, sampling, queue_size, deadbands, problems) for tag in tags)
    if problems and any(p.path == "url" for p in problems):
        return None, problems
    options = DeviceOptions(
        url=device.url, mode=mode, publishing_interval_ms=publishing, batch_size=batch_size, **security,
        trust=trust, username=username, password_file=password_file, session_timeout_s=session_timeout,
        reconnect_max_s=reconnect_max, max_pending_samples=max_pending, timeout_s=device.timeout_s,
        interval_s=device.interval_s, tags=tag_opts,
    )
    return options, problems
