"""``plantwatch alarms|ack|shelve|unshelve|suppress|unsuppress|out-of-service|in-service``: the
running agent's alarms, and acting on them.

State changes go through the operator socket (``[alarm_system] api_socket``): the agent records
the OS user running this command as their author. Before a byte is sent the socket must prove it
is the agent's: it is a socket, owned by root or by the agent's user (the owner of ``data_dir``),
and the process answering on it (SO_PEERCRED) runs as one of them. ``alarms`` reads over the
socket too, or over the loopback port (read-only) when this user may not use the socket, once
the port is shown to be listened on by root or the agent's user (/proc/net/tcp). Neither ever goes through a proxy:
the HTTP client is http.client on a socket of its own, which reads no proxy settings.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

if TYPE_CHECKING:
    from agent.config import Config

EXIT_OK, EXIT_FAIL, EXIT_CONFIG = 0, 1, 2
OPS = (("ack", "ack", "acknowledge an alarm"),
       ("shelve", "shelve", "shelve an alarm (timed with --for, else one-shot)"),
       ("unshelve", "unshelve", "unshelve an alarm"),
       ("suppress", "suppress", "suppress an alarm by design (needs --reason and --for)"),
       ("unsuppress", "unsuppress", "end a suppression"),
       ("out-of-service", "out_of_service", "take an alarm out of service (needs --reason and --for)"),
       ("in-service", "in_service", "return an alarm to service"))


class NotTheAgent(ConnectionError):
    """The endpoint cannot be shown to be the agent's."""


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, sock: socket.socket):
        super().__init__("localhost", timeout=10)
        self.sock = sock

    def connect(self) -> None:  # already connected
        pass


def agent_uids(cfg: Config) -> set[int]:
    """root and the agent's user: the owner of data_dir."""
    uids = {0}
    try:
        uids.add(cfg.agent.data_dir.stat().st_uid)
    except OSError:
        pass
    return uids


def connect_socket(cfg: Config) -> socket.socket:
    """A connection to the agent's operator socket, after checking it is the agent's."""
    from agent.api import peer_uid, user_name

    path = cfg.alarm_system.socket_path(cfg.agent.data_dir)
    allowed = agent_uids(cfg)
    names = " or ".join(sorted(user_name(u) for u in allowed))
    try:
        st = path.lstat()
    except FileNotFoundError:
        raise ConnectionError(f"no operator socket at {path}: is the agent running?") from None
    except PermissionError:
        raise ConnectionError(f"{path}: permission denied (is this user in api_socket_group?)") from None
    if not stat.S_ISSOCK(st.st_mode):
        raise NotTheAgent(f"{path} is not a socket; refusing to talk to it")
    if st.st_uid not in allowed:
        raise NotTheAgent(f"{path} is owned by {user_name(st.st_uid)}, not by the agent's user ({names}); "
                          "refusing to talk to it")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except PermissionError:
        sock.close()
        raise ConnectionError(f"{path}: permission denied (is this user in api_socket_group?)") from None
    except OSError as exc:
        sock.close()
        raise ConnectionError(f"{path}: {exc.strerror}: is the agent running?") from None
    uid = peer_uid(sock)
    if uid not in allowed:
        sock.close()
        raise NotTheAgent(f"{path} is answered by a process of {user_name(uid)}, not the agent's user ({names}); "
                          "refusing to talk to it")
    return sock


def port_owner(port: int) -> int | None:
    """The uid owning the socket listening on 127.0.0.1:``port`` (Linux /proc/net/tcp), or None."""
    want = f"0100007F:{port:04X}"
    try:
        lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        fields = line.split()
        if len(fields) > 7 and fields[1] in (want, f"00000000:{port:04X}") and fields[3] == "0A":  # LISTEN
            return int(fields[7])
    return None


def check_port(cfg: Config) -> None:
    """The loopback port must be the agent's: listened on by root or the agent's user."""
    from agent.api import user_name

    port = cfg.alarm_system.api_port
    allowed = agent_uids(cfg)
    uid = port_owner(port)
    if uid is not None and uid not in allowed:
        names = " or ".join(sorted(user_name(u) for u in allowed))
        raise NotTheAgent(f"127.0.0.1:{port} is listened on by {user_name(uid)}, not by the agent's user "
                          f"({names}); refusing to talk to it")


PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


def proxy_notice(environ: dict[str, str]) -> str | None:
    """What the operator is told when the environment names a proxy, which the agent's API never goes through."""
    names = [n for n in PROXY_VARIABLES if environ.get(n)]
    if not names:
        return None
    return f"note: {', '.join(names)} ignored: the agent's API is reached directly, never through a proxy"


def request(cfg: Config, method: str, path: str, body: dict | None = None,
            via_socket: bool = True) -> tuple[int, dict]:
    """One request to the agent: over the operator socket, or the loopback port (read-only)."""
    if (notice := proxy_notice(dict(os.environ))) is not None:
        print(notice, file=sys.stderr)
    data = json.dumps(body).encode() if body is not None else None
    headers = {"Content-Type": "application/json"} if data is not None else {}
    if via_socket:
        conn: http.client.HTTPConnection = _UnixConnection(connect_socket(cfg))
    else:
        check_port(cfg)
        port = cfg.alarm_system.api_port
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
    except OSError as exc:
        where = "the operator socket" if via_socket else f"127.0.0.1:{cfg.alarm_system.api_port}"
        raise ConnectionError(f"{where}: {exc.strerror or exc}: is the agent running?") from None
    finally:
        conn.close()
    try:
        return resp.status, json.loads(raw or b"{}")
    except ValueError:
        raise ConnectionError(f"the answer is not JSON (HTTP {resp.status})") from None


def cmd_alarms(args: argparse.Namespace) -> int:
    from agent.cli import _load_or_report

    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    try:
        try:
            status, doc = request(cfg, "GET", "/alarms")
        except NotTheAgent:
            raise
        except ConnectionError:
            if not cfg.alarm_system.api_port:
                raise
            status, doc = request(cfg, "GET", "/alarms", via_socket=False)  # this user may not use the socket
    except ConnectionError as exc:
        print(f"alarms: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if status != 200:
        print(f"alarms: {doc.get('error', status)}", file=sys.stderr)
        return EXIT_FAIL
    rows = [a for a in doc["alarms"] if args.all or a["active"] or not a["acked"] or a["shelved"]]
    for a in rows:
        flags = [f for f in ("active", "shelved", "suppressed", "out_of_service", "latched", "chattering") if a[f]]
        flags.append("acked" if a["acked"] else "UNACKED")
        value = "" if a["value"] is None else f" value={a['value']:g}"
        print(f"{a['id']:32} {a['level']:6} {','.join(flags)}{value} since {a['active_since'] or a['ts']}")
    print(f"{len(rows)} alarms" + ("" if args.all else " (active, unacknowledged or shelved; --all for every one)"))
    return EXIT_OK


def cmd_operate(args: argparse.Namespace) -> int:
    from agent.cli import _load_or_report

    cfg = _load_or_report(args.config)
    if cfg is None:
        return EXIT_CONFIG
    body: dict = {}
    if args.user:
        body["user"] = args.user
    if args.comment:
        body["comment"] = args.comment
    if getattr(args, "duration", None):
        body["duration_s"] = args.duration
    try:
        status, doc = request(cfg, "POST", f"/alarms/{quote(args.id, safe='')}/{args.op}", body)
    except ConnectionError as exc:
        print(f"{args.command}: {exc}", file=sys.stderr)
        return EXIT_FAIL
    if status != 200:
        print(f"{args.command} {args.id}: {doc.get('error', status)}", file=sys.stderr)
        return EXIT_FAIL
    for m in doc["messages"]:
        print(f"seq={m['seq']} {m['id']} {m['state']}: {m['message']}")
    return EXIT_OK


def describe(cfg: Config) -> str:
    """check's line about how operators reach the agent."""
    a = cfg.alarm_system
    port = (f"api 127.0.0.1:{a.api_port} " + ("read-only + token" if a.api_token_file else "read-only")
            if a.api_port else "api off")
    algs = [alg for alg, f in (("hmac-sha256", a.command_key_file), ("ed25519", a.command_public_key_file)) if f]
    commands = "signed: " + " ".join(algs) if a.commands else "off"
    lan = f", console https://{a.console_listen} (login)" if a.console_listen else ""
    return (f"operators: socket {a.socket_path(cfg.agent.data_dir)} (group {a.api_socket_group or 'of the agent'}), "
            f"{port}{lan}, mqtt commands {commands}")


def add_parsers(sub) -> None:
    s = sub.add_parser("alarms", help="list the running agent's alarms")
    s.add_argument("config")
    s.add_argument("--all", action="store_true", help="also alarms that are cleared and acknowledged")
    s.set_defaults(func=cmd_alarms)
    for name, op, text in OPS:
        s = sub.add_parser(name, help=text + "; recorded with this OS user as the author")
        s.add_argument("config")
        s.add_argument("id", help="alarm id, e.g. R101.TI01/limit or r1-plc/comm")
        s.add_argument("--user", default="", help="on whose behalf (recorded as claimed_user beside the OS user)")
        s.add_argument("--comment", "--reason", dest="comment", default="",
                       help="recorded in the alarm message; the reason of a suppression or out-of-service")
        if op in ("shelve", "suppress", "out_of_service"):
            most = {"shelve": "max_shelve_s", "suppress": "max_suppress_s", "out_of_service": "max_out_of_service_s"}
            s.add_argument("--for", dest="duration", type=float, help=f"seconds (at most alarm_system.{most[op]})")
        s.set_defaults(func=cmd_operate, op=op)
