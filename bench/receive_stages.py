"""A storing receiver worker's stages, one thread, per message: ``agent.ingest.read`` (parse, depth
check, schema, row), paho's decoding of an alarm PUBLISH's MQTT 5 properties, and
``Store.write`` into PostgreSQL (the OS's, a temporary data directory) in batches of 500.
5,000 alarm messages from 200 gateways' real alarm managers and outboxes; best of 3.

    .venv/bin/python bench/receive_stages.py [TREE]   # TREE: another checkout's root, to compare
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.abspath(sys.argv[1]) if len(sys.argv) > 1 else ROOT)

from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from agent.alarms import AlarmManager, TagInfo  # noqa: E402
from agent.ingest import Incoming, read  # noqa: E402 - installs the worker's property table, if it has one
from agent.outbox import Outbox  # noqa: E402
from agent.payloads import topic  # noqa: E402
from agent.store import Store  # noqa: E402
from detectors.base import ConditionChange  # noqa: E402
from tests.postgres import Postgres  # noqa: E402


def messages(directory: Path) -> list[Incoming]:
    out = []
    for i in range(200):
        plant = f"65{i:010d}"
        outbox = Outbox(directory / f"{plant}.db", durable=False)
        manager = AlarmManager(plant, [TagInfo("U1.TI01", "plc01", "°C", "1#温度", 2)])
        for k in range(25):
            active = k % 2 == 0
            docs = manager.on_changes([ConditionChange(0, "limit", "H", active, 170.0 if active else 150.0, 160.0,
                                                       time.time())])
            outbox.append_alarms(topic("plantwatch", plant, "alarm"), docs)
        out += [Incoming(1, 1, 1, r.topic, r.payload, False, time.time()) for r in outbox.pending(0, 0, 1000)]
        outbox.close()
    return out


def per_message(fn, n: int) -> float:
    """Best of 3: CPU µs of the process per item."""
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        fn()
        best = min(best, (time.process_time() - t) / n * 1e6)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory(prefix="pw-stages-") as tmp:
        msgs = messages(Path(tmp))
    rows = [read(m) for m in msgs]
    print(f"read: {per_message(lambda: [read(m) for m in msgs], len(msgs)):.1f} us/msg ({len(msgs)} alarm messages)")
    props = Properties(PacketTypes.PUBLISH)  # as agent.uplink sends an alarm
    props.UserProperty = [("schema", "plantwatch.alarm/2"), ("plant", "650000000001")]
    props.ContentType = "application/json"
    props.PayloadFormatIndicator = 1
    packed = props.pack()

    def unpack() -> None:
        for _ in range(20000):
            Properties(PacketTypes.PUBLISH).unpack(packed)

    print(f"paho, the properties of one PUBLISH: {per_message(unpack, 20000):.1f} us")
    pg = Postgres().start()
    try:
        store = Store.open(pg.url, worker="w")
        results = []
        for _ in range(3):
            store.write(rows[:1])
            store.query("DELETE FROM alarms RETURNING 1")
            t, w0 = time.process_time(), time.time()
            for k in range(0, len(rows), 500):
                store.write(rows[k:k + 500])
            results.append(((time.process_time() - t) / len(rows) * 1e6, (time.time() - w0) / len(rows) * 1e6))
        cpu, wall = min(results)
        print(f"Store.write (PostgreSQL, batches of 500): {cpu:.1f} us/row of this process's CPU, {wall:.1f} us/row wall")
        store.close()
    finally:
        pg.close()
    print("load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
