"""The console's login file (``[alarm_system] console_users_file``): one user a line,
``NAME scrypt$N$r$p$SALT$HASH`` (salt and hash base64), comments with ``#``.

Passwords are never stored, only their scrypt hash with a random 16-byte salt; a check costs
about 16 MiB and tens of milliseconds, which is the point (a stolen file is slow to guess).
Add or replace a user with ``python -m agent.passwords FILE NAME`` (the password is read twice
from the terminal, or once from standard input when that is not a terminal).
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import os
import sys
from pathlib import Path

N, R, P = 2**14, 8, 1
MIN_LENGTH = 10
#: checked for a name not in the file, so an unknown user costs as long as a wrong password
_DUMMY = f"scrypt${N}${R}${P}${base64.b64encode(b'0' * 16).decode()}${base64.b64encode(b'0' * 32).decode()}"


def hash_password(password: str, salt: bytes | None = None) -> str:
    salt = os.urandom(16) if salt is None else salt
    digest = hashlib.scrypt(password.encode(), salt=salt, n=N, r=R, p=P, dklen=32)
    return f"scrypt${N}${R}${P}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def parse_hash(text: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, hash) of a stored hash; ValueError naming what is wrong."""
    parts = text.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        raise ValueError("is not scrypt$N$r$p$SALT$HASH")
    n, r, p = (int(x) for x in parts[1:4])
    if n < 2**14 or n & (n - 1) or not 1 <= r <= 32 or not 1 <= p <= 16:
        raise ValueError(f"scrypt parameters N={n} r={r} p={p}: N must be a power of 2 >= 16384")
    salt, digest = base64.b64decode(parts[4], validate=True), base64.b64decode(parts[5], validate=True)
    if len(salt) < 16 or len(digest) < 32:
        raise ValueError("salt must be >= 16 bytes and hash >= 32 bytes")
    return n, r, p, salt, digest


def verify(password: str, stored: str) -> bool:
    n, r, p, salt, digest = parse_hash(stored)
    got = hashlib.scrypt(password.encode(), salt=salt, n=n, r=r, p=p, maxmem=256 * 1024 * 1024, dklen=len(digest))
    return hmac.compare_digest(got, digest)


def read_users(path: Path) -> dict[str, str]:
    """name -> stored hash; ValueError naming the file and line of a bad entry."""
    users = {}
    for no, line in enumerate(path.read_text().splitlines(), 1):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        if len(words) != 2:
            raise ValueError(f"{path}:{no}: expected NAME scrypt$..., got {len(words)} words")
        try:
            parse_hash(words[1])
        except ValueError as exc:
            raise ValueError(f"{path}:{no}: the hash of {words[0]!r} {exc}") from None
        users[words[0]] = words[1]
    return users


def check_login(users: dict[str, str], name: str, password: str) -> bool:
    """Whether ``password`` is ``name``'s; as slow for an unknown name as for a known one."""
    ok = verify(password, users.get(name, _DUMMY))
    return ok and name in users


def add_user(path: Path, name: str, password: str) -> None:
    if not name or any(c.isspace() for c in name) or name.startswith("#"):
        raise ValueError(f"bad user name {name!r}")
    if len(password) < MIN_LENGTH:
        raise ValueError(f"the password must have at least {MIN_LENGTH} characters")
    lines = path.read_text().splitlines() if path.exists() else []
    kept = [line for line in lines if not line.split() or line.split()[0] != name]
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("\n".join([*kept, f"{name} {hash_password(password)}"]) + "\n")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m agent.passwords USERS_FILE NAME", file=sys.stderr)
        return 2
    if sys.stdin.isatty():
        password = getpass.getpass(f"password for {argv[1]}: ")
        if getpass.getpass("again: ") != password:
            print("the passwords differ", file=sys.stderr)
            return 2
    else:
        password = sys.stdin.readline().rstrip("\n")
    try:
        add_user(Path(argv[0]), argv[1], password)
    except (ValueError, OSError) as exc:
        print(f"{argv[0]}: {exc}", file=sys.stderr)
        return 2
    print(f"{argv[0]}: {argv[1]} set")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
