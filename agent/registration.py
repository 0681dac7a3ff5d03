"""Sends the point registry (provincial profile) when it is new: at the first start, and at a
start whose config changed what the platform knows of the points.

Part of the shell: it reads and writes ``registry.sha256`` in ``data_dir`` (the digest of the
last registry put into the outbox) and appends the message to the outbox's alarm lane, which
is never thinned or capped, ahead of anything the agent measures.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from agent import registry
from agent.config import Config
from agent.outbox import ALARM, Outbox
from agent.payloads import dumps, topic

DIGEST_FILE = "registry.sha256"

log = logging.getLogger("plantwatch.registry")


def send_if_changed(cfg: Config, outbox: Outbox, now: float) -> bool:
    """Put the registry message into the outbox unless the last one put there had the same
    content. Returns whether it did."""
    profile = cfg.provincial
    if profile is None:
        return False
    pts = registry.points(cfg.tags, profile)
    doc = registry.message(profile, now, pts)
    digest = registry.digest(profile, doc)
    path = cfg.agent.data_dir / DIGEST_FILE
    if _read(path) == digest:
        return False
    # stored in the province's fields (no json schema): a provincial uplink encodes it when it
    # sends it, a json uplink passes it by
    outbox.append(topic(cfg.uplink.topic_prefix, cfg.agent.plant, "registry"), dumps(doc), lane=ALARM, now=now)
    # after the append: a crash in between sends the same registry once more, never none
    _write(path, digest)
    log.info("point registry of %d points queued (%s)", len(pts), digest[:12])
    return True


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        return ""


def _write(path: Path, digest: str) -> None:
    tmp = path.with_suffix(".tmp")
    try:
        tmp.write_text(digest + "\n", encoding="ascii")
        os.replace(tmp, path)
    except OSError as exc:  # the registry is queued; it is only sent again at the next start
        log.warning("cannot write %s: %s", path, exc)
