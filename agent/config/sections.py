"""The single-table sections [agent], [uplink] (or the array [[uplinks]]) and [alarm_system]: each
key declared once, as a field of the section's dataclass, with its cross-checks beside it."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from agent.config.schema import (
    Problems,
    at_least,
    between,
    item,
    key,
    keys_of,
    non_negative,
    nonempty,
    positive,
)
from agent.history_compress import MODES
from agent.signing import load_keys


def _plant(v: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v) else \
        "must be 1-64 letters, digits, '_', '.' or '-' (it is part of MQTT topics)"


def _timezone(v: str) -> str | None:
    try:
        ZoneInfo(v)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {v!r}"
    return None


#: url scheme -> (transport, TLS, default port); the scheme of an uplink's url picks its transport
SCHEMES = {"mqtt": ("mqtt", False, 1883), "mqtts": ("mqtt", True, 8883),
           "http": ("http", False, 80), "https": ("http", True, 443),
           "tcp": ("tcp", False, 0), "tls": ("tcp", True, 0)}


def redact(url: str) -> str:
    """``url`` with the password of its user info replaced by ``***`` (what check and errors show)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    return parts._replace(netloc=f"{parts.username}:***@{host}").geturl()


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _uplink_url(v: str) -> str | None:
    parts = urlsplit(v)
    v = redact(v)
    if parts.scheme not in SCHEMES:
        return f"must start with {', '.join(s + '://' for s in SCHEMES)}, not {v!r}"
    try:
        parts.port  # noqa: B018 - raises on a bad port
    except ValueError as exc:
        return f"bad port: {exc}"
    if not parts.hostname:
        return f"has no host: {v!r}"
    return None if SCHEMES[parts.scheme][2] or parts.port else f"a {parts.scheme}:// url needs a port: {v!r}"


def _name(v: str) -> str | None:
    return None if re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v) else "must be 1-64 letters, digits, '_', '.' or '-'"


def _topic_prefix(v: str) -> str | None:
    return None if v and not set(v) & set("#+") and not v.startswith("/") else \
        "must be a non-empty topic level without '#', '+' or a leading '/'"


@dataclass(frozen=True)
class AgentSection:
    plant: str = key(doc="enterprise code; in every topic and payload. Letters, digits, `_ . -`, at most 64",
                     check=_plant, kind="str")
    name: str = key("", "display name, in the status message")
    data_dir: Path = key(Path("/var/lib/plantwatch"), "outbox (`outbox.db`), history, models", check=nonempty)
    timezone: str = key("Asia/Shanghai", "IANA zone for the provincial profile's local times", check=_timezone)
    log_level: str = key("INFO", "how much the agent logs", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    points_file: Path | None = key(None, "point list (位号表): a CSV whose columns are [[tags]] keys and whose rows "
                                   "add to [[tags]] (see “Point lists (CSV)” below)", kind="path")
    tags_file: Path | None = key(None, "the other name of `points_file`", kind="path")
    detectors_file: str = key("detectors.json", "per-tag calibration of ewma/cusum/robust/flatline that `plantwatch "
                              "train --detectors` writes (JSON, relative to `data_dir`), loaded at start; a tag's own "
                              "detector keys win over it; \"\" = none")
    target_alarms_per_week: float = key(1.0, "expected false alarms per tag and detector per week that `plantwatch "
                                        "train --detectors` calibrates for", check=positive)


@dataclass(frozen=True)
class UplinkSection:
    url: str = key("mqtt://127.0.0.1:1883", "the scheme picks the transport: `mqtt://host:port`, `mqtts://host:port` "
                   "(TLS), `http://host:port/path` or `https://host:port/path` (POST, TLS), `tcp://host:port` or "
                   "`tls://host:port` (framed messages on a persistent connection, TLS)", check=_uplink_url)
    name: str = key("default", "names the uplink in status, metrics and logs; unique, required in [[uplinks]]",
                    check=_name)
    profile: str = key("json", "`json` (docs/PAYLOADS.md) or `provincial`", choices=("json", "provincial"))
    topic_prefix: str = key("plantwatch", "topics are `{prefix}/{plant}/alarm|telemetry|status`", check=_topic_prefix)
    client_id: str = key("", "MQTT client id", shown="`plantwatch-{plant}`")
    username: str = key("", "MQTT user name")
    password_file: Path | None = key(None, "file holding the MQTT password (first line); never logged", kind="path")
    ca_file: Path | None = key(None, "CA bundle to verify the broker or the HTTPS/TLS platform (a private CA)",
                               kind="path")
    cert_file: Path | None = key(None, "client certificate for mutual TLS; with `key_file`", kind="path")
    key_file: Path | None = key(None, "client key for mutual TLS; with `cert_file`", kind="path")
    mqtt_version: int = key(3, "`3` (MQTT 3.1.1) or `5`", choices=(3, 5))
    keepalive_s: float = key(30.0, "MQTT keepalive; a silent link is detected after 1.5 × this",
                             check=between(1, 65535, "MQTT's keepalive is 1..65535 s"))
    heartbeat_s: float = key(60.0, "the status message is sent this often (MQTT: retained; HTTP and TCP: through the "
                             "same transport, after any pending alarm)", check=positive)
    telemetry_interval_s: float = key(60.0, "periodic telemetry snapshot; `0` turns telemetry off",
                                      check=non_negative)
    inflight: int = key(100, "QoS 1 messages in flight before waiting for PUBACKs",
                        check=between(1, 65535, "must be 1..65535"))
    backoff_initial_s: float = key(0.5, "first reconnect delay (doubling, with jitter)", check=positive)
    backoff_max_s: float = key(30.0, "longest reconnect delay", check=positive)
    session_expiry_s: float = key(
        0.0, "MQTT 5: how long the broker keeps the agent's session after a drop (every connection starts clean; "
        "the outbox, not the broker, holds what is unsent)", check=between(0, 4294967295, "must be 0..4294967295 s"))
    resend_s: float = key(
        10.0, "MQTT: alarms the broker acknowledged in this many seconds before a connection dropped are published "
        "again on the next connection, first: a broker killed before it saved or forwarded them loses none "
        "(receivers de-duplicate on (plant, epoch, seq)); `0` turns this off", check=non_negative)
    telemetry_expiry_s: float = key(
        3600.0, "MQTT 5: message expiry of telemetry messages (the broker may drop older ones for an absent "
        "subscriber); alarms and status never expire. `0`: no expiry", check=non_negative)
    telemetry_change_s: float = key(
        0.0, "between snapshots, look this often for tags that moved by more than `telemetry_deadband` or changed "
        "quality and send only those (`\"change\": true`); `0` turns on-change telemetry off", check=non_negative)
    telemetry_deadband: float = key(
        0.0, "engineering units a tag must move, from the value it was last sent with, to be sent on change",
        check=non_negative)
    timeout_s: float = key(10.0, "HTTP: how long a request may take (connect, send, answer) before it is retried",
                           check=positive)
    batch_max: int = key(1, "HTTP: telemetry rows per request; above 1 the body is a JSON array of up to this many "
                         "payloads (only where the platform's spec allows); alarms are always one per request",
                         check=between(1, 1000, "must be 1..1000"))
    framing: str = key("delimiter", "TCP: how messages are cut on the stream: each followed by `delimiter`, or "
                       "`length` (each preceded by its length, 4 bytes big-endian); answers come back the same way",
                       choices=("delimiter", "length"))
    delimiter: str = key("\n", "TCP: the bytes (UTF-8) that end each message with `framing = \"delimiter\"`",
                         shown='`"\\n"`', check=nonempty)
    refused_codes: tuple[str, ...] = key(
        ("400",), "TCP: the platform's answer codes (the success rule's `field`, else `code`) that mean the message "
        "will never be taken: its row is dead-lettered with a storage alarm; any other non-success answer is retried",
        kind="list[str]", shown='`["400"]`')
    max_outbox_mb: float = key(
        512.0, "size cap of `outbox.db`; when full, the oldest telemetry is dropped (sent first, then unsent) and a "
        "`storage` alarm is raised; alarms are never dropped (see docs/OPERATIONS.md)", check=at_least(1, " (MB)"))
    min_free_mb: float = key(
        64.0, "free space to keep on the file system of `data_dir`: below it the `gateway/storage` alarm is raised "
        "and the size cap shrinks to keep it free (the oldest telemetry goes first), before a full disk can stop "
        "alarms being stored (see docs/OPERATIONS.md)", check=at_least(0, " (MB)"))
    max_pending_alarms: int = key(
        10000, "alarm messages kept in memory, in order, while the outbox cannot store them (disk full, I/O error, "
        "locked or read-only file); beyond it the newest are lost and the `outbox/storage` alarm counts them",
        check=at_least(100, ""))

    @property
    def transport(self) -> str:
        """``mqtt``, ``http`` or ``tcp``: the module that carries this uplink."""
        return SCHEMES[urlsplit(self.url).scheme][0]

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or SCHEMES[urlsplit(self.url).scheme][2]

    @property
    def tls(self) -> bool:
        return SCHEMES[urlsplit(self.url).scheme][1]


@dataclass(frozen=True)
class AlarmSystemSection:
    """Alarm-system health rules (EEMUA 191 / ISA-18.2) and how operators reach the alarms."""

    chatter_count: int = key(3, "an alarm activated this often within `chatter_window_s` is chattering",
                             check=at_least(2))
    chatter_window_s: float = key(60.0, "the window of `chatter_count`", check=positive)
    chatter_shelve_s: float = key(0.0, "> 0: a chattering alarm is shelved this long automatically (by `plantwatch`)",
                                  check=non_negative)
    flood_count: int = key(10, "more new alarms than this within `flood_window_s` is a flood", check=at_least(1))
    flood_window_s: float = key(600.0, "the window of `flood_count`", check=positive)
    stale_s: float = key(86400.0, "an alarm active longer than this is stale", check=positive)
    max_shelve_s: float = key(86400.0, "the longest timed shelve an operator may ask for", check=positive)
    max_suppress_s: float = key(7 * 86400.0, "the longest suppression an operator may ask for (a suppression "
                                "always has a reason and a duration, and ends by itself)", check=positive)
    max_out_of_service_s: float = key(7 * 86400.0, "the longest out-of-service an operator may ask for (with a "
                                      "reason and a duration, ends by itself)", check=positive)
    commands: bool = key(False, "accept signed operator commands on `{prefix}/{plant}/cmd` (docs/PAYLOADS.md, "
                         "*Commands*); needs `command_key_file` or `command_public_key_file`")
    command_key_file: Path | None = key(None, "HMAC-SHA256 key of signed commands (`alg` `hmac-sha256`): the file's "
                                        "bytes, at least 32, one trailing newline ignored", kind="path")
    command_public_key_file: Path | None = key(None, "Ed25519 public key (PEM) of signed commands (`alg` `ed25519`)",
                                               kind="path")
    command_window_s: float = key(300.0, "a command's `ts` must be within this many seconds of the gateway's clock "
                                  "(and not before the agent started); its nonce is remembered twice as long",
                                  check=positive)
    command_rate_per_min: int = key(30, "at most this many commands per minute are looked at; more are refused",
                                    check=at_least(1))
    api_port: int = key(8787, "the local API on 127.0.0.1: `/metrics`, `/status`, `/alarms` for anyone on the "
                        "gateway, state changes only with the bearer token of `api_token_file`; 0 = off",
                        check=between(0, 65535, "must be 0 (off) .. 65535"))
    api_socket: Path | None = key(None, "the Unix socket of state-changing operator actions (`plantwatch ack/"
                                  "shelve/...`); the OS user at the other end is recorded as the author",
                                  kind="path", shown="`{data_dir}/api.sock`")
    api_socket_group: str = key("", "the group that may use `api_socket` (mode 0660); empty: the agent's own group")
    api_token_file: Path | None = key(None, "bearer token(s) for state changes over `api_port`: one per line, "
                                      "`NAME TOKEN` (recorded as `token:NAME`) or just `TOKEN` (`token:api`); "
                                      "absent: the port is read-only", kind="path")
    console_listen: str = key("", "`ADDRESS:PORT` of the console on the LAN (HTTPS, every view behind a login), "
                              "e.g. `192.168.10.5:8443` or `0.0.0.0:8443`; empty: the console is only at "
                              "http://127.0.0.1:{api_port}/. A non-loopback address needs `console_cert_file` and "
                              "`console_key_file`")
    console_cert_file: Path | None = key(None, "TLS certificate chain (PEM) of `console_listen`", kind="path")
    console_key_file: Path | None = key(None, "TLS private key (PEM) of `console_listen`", kind="path")
    console_users_file: Path | None = key(None, "logins of the LAN console: lines `NAME scrypt$N$r$p$SALT$HASH` "
                                          "(`python -m agent.passwords FILE NAME` adds one); a token of "
                                          "`api_token_file` signs in as well", kind="path")
    console_session_s: float = key(28800.0, "a LAN console login lasts this long (kept by the agent, not the "
                                   "browser), then the page asks again", check=between(60, 7 * 86400,
                                                                                     "must be 60..604800 s"))

    def socket_path(self, data_dir: Path) -> Path:
        return self.api_socket if self.api_socket is not None else data_dir / "api.sock"


def read_section(cls: type, data: Any, path: str, base: Path, p: Problems) -> dict[str, Any]:
    """The section's values; file paths resolved against ``base`` (the config's directory)."""
    keys = keys_of(cls)
    values = p.read(data, path, keys)
    for k, spec in keys.items():
        if spec.kind == "path" and isinstance(values[k], (str, Path)):
            values[k] = base / values[k]
    return values


def agent(data: Any, base: Path, p: Problems) -> AgentSection:
    a = read_section(AgentSection, data, "agent", base, p)
    if a["tags_file"] is not None:
        if a["points_file"] is not None:
            p.add("agent.tags_file", "is the other name of points_file: set only one")
        a["points_file"] = a["points_file"] or a["tags_file"]
    return AgentSection(**{**a, "plant": a["plant"] or ""})


def uplink(data: Any, base: Path, p: Problems, path: str = "uplink") -> UplinkSection:
    u = read_section(UplinkSection, data, path, base, p)
    for k in ("password_file", "ca_file", "cert_file", "key_file"):
        if u[k] is not None and not u[k].is_file():
            p.add(f"{path}.{k}", f"no such file: {u[k]}")
    if (u["cert_file"] is None) != (u["key_file"] is None):
        p.add(f"{path}.key_file" if u["key_file"] is None else f"{path}.cert_file", "cert_file and key_file go together")
    if u["url"] and not SCHEMES.get(urlsplit(u["url"]).scheme, (0, False))[1] and any(u[k] for k in ("ca_file", "cert_file")):
        p.add(f"{path}.url", "ca_file/cert_file are set but the url is not mqtts://, https:// or tls://")
    if u["url"] and (urlsplit(u["url"]).username or urlsplit(u["url"]).password):
        p.add(f"{path}.url", f"must not carry credentials ({redact(u['url'])}); use username and password_file")
    if (u["url"] and u["password_file"] is not None and urlsplit(u["url"]).scheme in SCHEMES
            and not SCHEMES[urlsplit(u["url"]).scheme][1] and not is_loopback(urlsplit(u["url"]).hostname or "")):
        p.add(f"{path}.password_file", f"a password would cross the network in clear to {urlsplit(u['url']).hostname}: "
              "use mqtts:// (or https://) with ca_file")
    if u["backoff_max_s"] < u["backoff_initial_s"]:
        p.add(f"{path}.backoff_max_s", f"must be >= backoff_initial_s ({u['backoff_initial_s']})")
    u["refused_codes"] = tuple(str(c) for c in u["refused_codes"] or ())
    return UplinkSection(**u)


def uplinks(single: Any, array: Any, base: Path, p: Problems) -> tuple[UplinkSection, ...]:
    """[uplink] (one uplink, named "default") or [[uplinks]] (several, each named), not both."""
    if array is None:
        return (uplink(single if single is not None else {}, base, p),)
    if single is not None:
        p.add("uplinks", "use [uplink] for one uplink or [[uplinks]] for several, not both")
    if not isinstance(array, list) or not array:
        p.add("uplinks", "must be a non-empty array of tables ([[uplinks]])")
        return (UplinkSection(),)
    out, seen = [], set()
    for i, entry in enumerate(array):
        path = item("uplinks", i, entry)
        if isinstance(entry, dict) and "name" not in entry:
            p.add(f"{path}.name", "is required")
        section = uplink(entry, base, p, path)
        if section.name in seen:
            p.add(f"{path}.name", f"duplicate uplink name {section.name!r}")
        seen.add(section.name)
        out.append(section)
    return tuple(out)


def alarm_system(data: Any, base: Path, p: Problems) -> AlarmSystemSection:
    section = AlarmSystemSection(**read_section(AlarmSystemSection, data, "alarm_system", base, p))
    if section.chatter_shelve_s > section.max_shelve_s:
        p.add("alarm_system.chatter_shelve_s", f"must not exceed max_shelve_s ({section.max_shelve_s:g})")
    for k in ("command_key_file", "command_public_key_file", "api_token_file", "console_cert_file",
              "console_key_file", "console_users_file"):
        if getattr(section, k) is not None and not getattr(section, k).is_file():
            p.add(f"alarm_system.{k}", f"no such file: {getattr(section, k)}")
    if section.commands and section.command_key_file is None and section.command_public_key_file is None:
        p.add("alarm_system.commands", "commands over MQTT must be signed: set command_key_file (HMAC-SHA256) "
              "or command_public_key_file (Ed25519)")
    for k in ("command_key_file", "command_public_key_file"):
        path = getattr(section, k)
        if path is not None and path.is_file():
            try:
                load_keys(path if k == "command_key_file" else None, path if k != "command_key_file" else None)
            except (ValueError, OSError) as exc:
                p.add(f"alarm_system.{k}", str(exc))
    if section.api_token_file is not None and section.api_token_file.is_file():
        _check_tokens(section.api_token_file, p)
    if section.api_socket_group:
        import grp

        try:
            grp.getgrnam(section.api_socket_group)
        except KeyError:
            p.add("alarm_system.api_socket_group", f"no such group: {section.api_socket_group!r}")
    if section.console_listen:
        _check_console(section, p)
    return section


def listen_address(text: str) -> tuple[str, int]:
    """(host, port) of ``console_listen``; ValueError saying what is wrong."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(f"{text!r} is not ADDRESS:PORT (port 1..65535)")
    try:
        ipaddress.ip_address(host)
    except ValueError:
        if host != "localhost":
            raise ValueError(f"{host!r} is not an IP address (give the interface's address, or 0.0.0.0)") from None
    return host, int(port)


def _check_console(section: AlarmSystemSection, p: Problems) -> None:
    """console_listen: an address, TLS unless loopback, a cert/key pair that loads, someone to log in."""
    import ssl

    from agent.passwords import read_users

    try:
        host, _ = listen_address(section.console_listen)
    except ValueError as exc:
        p.add("alarm_system.console_listen", str(exc))
        return
    cert, key_ = section.console_cert_file, section.console_key_file
    if cert is None or key_ is None:
        where = "the loopback address" if is_loopback(host) else f"{host}, reachable from the network,"
        p.add("alarm_system.console_listen", f"the console on {where} is served only over TLS with a login: "
              "set console_cert_file and console_key_file (the loopback console needs neither: "
              "http://127.0.0.1:{api_port}/)")
    if cert is not None and key_ is not None and cert.is_file() and key_.is_file():
        try:
            ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key_)
        except (ssl.SSLError, OSError) as exc:
            p.add("alarm_system.console_cert_file", f"{cert} with {key_} does not load as a TLS pair: {exc}")
    if section.console_users_file is None and section.api_token_file is None:
        p.add("alarm_system.console_listen", "nobody could sign in: set console_users_file (or api_token_file)")
    if section.console_users_file is not None and section.console_users_file.is_file():
        try:
            read_users(section.console_users_file)
        except (ValueError, OSError, UnicodeDecodeError) as exc:
            p.add("alarm_system.console_users_file", str(exc))


def _check_tokens(path: Path, p: Problems) -> None:
    """api_token_file: lines `NAME TOKEN` or `TOKEN`, each token at least 16 characters."""
    try:
        lines = path.read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        p.add("alarm_system.api_token_file", f"cannot be read: {exc}")
        return
    tokens = [line.split()[-1] for line in lines if line.split() and not line.split()[0].startswith("#")]
    if not tokens:
        p.add("alarm_system.api_token_file", f"{path} holds no token")
    for n, token in enumerate(tokens, 1):
        if len(token) < 16:
            p.add("alarm_system.api_token_file", f"token {n} is shorter than 16 characters")


@dataclass(frozen=True)
class HistorySection:
    """The local history of every tag (docs/HISTORY.md)."""

    enabled: bool = key(True, "record every tag locally, compressed; `plantwatch history` reads it back")
    retention_days: int = key(31, "days of history kept at least (major hazard installations: 30); a day file older "
                              "than this is deleted", check=at_least(1))
    dir: Path | None = key(None, "the directory of the day files (one SQLite file per UTC day)", kind="path",
                           shown="`{data_dir}/history`")
    compression: str = key("swinging-door", "`swinging-door` (linear between points, within the deviation), "
                           "`deadband` (a point when the value moved by more than the deviation) or `none`",
                           choices=MODES)
    deviation: float = key(0.0, "error bound in engineering units for every tag without `history_deviation`; `0`: "
                           "`deviation_pct` of the tag's `range`", check=non_negative)
    deviation_pct: float = key(0.2, "error bound as a percentage of the span of the tag's `range`, where `deviation` "
                               "is 0; a tag with neither is archived at every change",
                               check=between(0, 100, "must be 0..100 (percent)"))
    max_interval_s: float = key(600.0, "a point at least this often per tag, even while the value is flat, so that a "
                                "gap in the history means no data", check=positive)
    flush_s: float = key(5.0, "archived points are committed this often (a crash loses at most this much history)",
                         check=positive)
    max_mb: float = key(2048.0, "size cap of the history files; a `storage` alarm is raised when `retention_days` "
                        "is projected not to fit, before the oldest day has to be deleted (docs/HISTORY.md)",
                        check=at_least(1, " (MB)"))
    min_free_mb: float = key(256.0, "free space to leave on the history's file system; counts like the cap",
                             check=non_negative)

    def path(self, data_dir: Path) -> Path:
        return self.dir if self.dir is not None else data_dir / "history"


def history(data: Any, base: Path, p: Problems) -> HistorySection:
    return HistorySection(**read_section(HistorySection, data, "history", base, p))


@dataclass(frozen=True)
class TrendSection:
    """The console's trends: the recent past of every tag and model statistic in memory
    (agent.trend_ring, docs/CONSOLE.md)."""

    window_s: float = key(3600.0, "how far back the in-memory trend of every tag and model statistic reaches; "
                          "earlier ranges come from the history when `[history] enabled`", check=at_least(60, " (s)"))
    resolution_s: float = key(10.0, "width of a trend bucket: each keeps the lowest, highest and last value of the "
                              "tag (12 bytes per tag and bucket)", check=positive)
    max_mb: float = key(16.0, "memory cap of the tags' trend ring; with many tags the buckets widen to stay under it "
                        "(docs/CONSOLE.md)", check=at_least(1, " (MB)"))

    def check(self, path: str, p: Problems) -> None:
        if self.resolution_s * 2 > self.window_s:
            p.add(f"{path}.resolution_s", f"must be at most half of window_s ({self.window_s:g} s), "
                  f"not {self.resolution_s:g}")


def trend(data: Any, base: Path, p: Problems) -> TrendSection:
    section = TrendSection(**read_section(TrendSection, data, "trend", base, p))
    section.check("trend", p)
    return section
