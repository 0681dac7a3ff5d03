"""``plantwatch provincial decrypt``: what the agent sent a platform, in clear, for an operator who
must check it (a payload copied from the platform's log, the broker or a capture).

Each line of the input is one payload as it went on the wire (the envelope, if the profile has
one); each is opened with the config's envelope, encoding, cipher and key and printed as one
JSON line. A line that does not decrypt is reported by its number with the reason, and the
others still are.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

from agent.cli import EXIT_CONFIG, EXIT_FAIL, EXIT_OK
from agent.provincial import Profile, ProvincialError

if TYPE_CHECKING:
    from agent.config import Config


def decrypt_lines(profile: Profile, lines: Iterable[bytes], out: Callable[[str], None],
                  err: Callable[[str], None]) -> int:
    """Decrypt every non-blank line; returns how many failed."""
    failed = 0
    for n, line in enumerate(lines, 1):
        payload = line.strip()
        if not payload:
            continue
        try:
            doc = profile.decode(payload)
        except ProvincialError as exc:
            failed += 1
            err(f"line {n}: {exc}")
            continue
        out(json.dumps(doc, ensure_ascii=False, separators=(",", ":")))
    return failed


def run(cfg: Config, source: str | None) -> int:
    """The command on a loaded config: payloads from the file ``source`` or standard input."""
    if cfg.provincial is None:
        print(f'provincial decrypt: {cfg.path}: uplink.profile is not "provincial"', file=sys.stderr)
        return EXIT_CONFIG
    try:
        stream = open(source, "rb") if source else sys.stdin.buffer  # noqa: SIM115 - closed below
    except OSError as exc:
        print(f"provincial decrypt: cannot read {source}: {exc.strerror or exc}", file=sys.stderr)
        return EXIT_FAIL
    try:
        failed = decrypt_lines(cfg.provincial, stream, out=lambda s: print(s, flush=True),
                               err=lambda s: print(s, file=sys.stderr, flush=True))
    finally:
        if source:
            stream.close()
    return EXIT_FAIL if failed else EXIT_OK
