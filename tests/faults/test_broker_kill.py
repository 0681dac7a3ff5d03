"""The broker killed and restarted in the middle of an alarm burst: nothing is lost.

mosquitto acknowledges a QoS 1 message before it is on disk (it saves once a second), so a
SIGKILL can destroy a message it acknowledged but had not yet written to a subscriber whose
socket was full. That is the platform broker's own durability, not the agent's; the SIGKILL
runs therefore hold the burst for a moment, let the platform receive everything the broker
acknowledged, kill the broker, and let the burst go on committing while it is away. A SIGTERM
saves the broker's sessions and queues, so that run does not wait for the platform to catch up.

The in-flight run does not hold anything back: the broker is SIGKILLed while the burst publishes
at full window, with messages unacknowledged, acknowledged but not forwarded, and in the
subscriber's socket. What the broker acknowledged in the last ``resend_s`` before the drop is
published again on the next connection, so the platform, de-duplicating on (plant, epoch, seq),
ends with every alarm exactly once, in order. (With ``resend_s = 0`` the same run loses tens of
alarms: the broker had acknowledged them and died before it saved or forwarded them.)
"""

from __future__ import annotations

import signal
import time

import pytest

from agent.config import UplinkSection
from agent.receiver import Receiver, connect
from agent.uplink import Uplink
from tests.faults.helpers import (
    PLANT,
    Burst,
    assert_every_committed_seq_arrived_in_order,
    status_doc,
    wait_for,
)


@pytest.mark.parametrize(("sig", "mqtt_version"), [(signal.SIGKILL, 3), (signal.SIGKILL, 5), (signal.SIGTERM, 3)],
                         ids=["SIGKILL-mqtt3", "SIGKILL-mqtt5", "SIGTERM-mqtt3"])
def test_broker_killed_during_burst_loses_no_alarm(tmp_path, persistent_mosquitto, sig, mqtt_version):
    broker = persistent_mosquitto
    path = tmp_path / "outbox.db"
    receiver = Receiver(emit=lambda line: None)
    # the platform's persistent session queues what arrives while it reconnects
    sub = connect(receiver, broker.url, PLANT, client_id="platform-1")
    cfg = UplinkSection(url=broker.url, mqtt_version=mqtt_version, keepalive_s=2.0, heartbeat_s=1.0,
                        backoff_initial_s=0.1, backoff_max_s=0.5)
    up = Uplink(cfg, PLANT, path, status_doc)
    total = 3000
    # SIGKILL: a rate the platform keeps up with; SIGTERM: faster, the platform falls behind
    burst = Burst(path, up.wake, total=total, batch=10, pause=0.02 if sig == signal.SIGKILL else 0.005)
    up.start()
    burst.start()
    try:
        assert receiver.wait(lambda r: len(r.alarms) >= 100, 30), receiver.summary()
        burst.gate.clear()  # hold the burst so it is still going when the broker dies
        broker.wait_saved()  # the platform's session is on disk, as a real broker's would be
        if sig == signal.SIGKILL:
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not (
                    up.sent_count >= burst.committed and len(receiver.alarms) >= burst.committed):
                time.sleep(0.02)
            assert len(receiver.alarms) >= burst.committed, receiver.summary()
        broker.proc.send_signal(sig)
        broker.stop()
        killed_at = burst.committed
        burst.gate.set()
        time.sleep(1.0)  # the burst goes on into the outbox while the broker is away
        broker.start()
        burst.join(60)
        assert burst.error is None and burst.committed == total
        assert killed_at < total, "the broker was killed after the burst, not during it"
        seqs = assert_every_committed_seq_arrived_in_order(receiver, path)
        assert len(seqs) == total
        assert up.connections >= 2
    finally:
        up.stop(2.0)
        sub.loop_stop()


def test_broker_sigkilled_with_messages_in_flight_loses_no_alarm(tmp_path, persistent_mosquitto):
    broker = persistent_mosquitto
    path = tmp_path / "outbox.db"
    # a platform a little slower than the gateway: the broker holds messages for it
    receiver = Receiver(emit=lambda line: time.sleep(0.002))
    sub = connect(receiver, broker.url, PLANT, client_id="platform-1")
    cfg = UplinkSection(url=broker.url, keepalive_s=2.0, heartbeat_s=1.0, backoff_initial_s=0.1, backoff_max_s=0.5,
                        resend_s=10.0)
    up = Uplink(cfg, PLANT, path, status_doc)
    total = 5000
    burst = Burst(path, up.wake, total=total, batch=20, pause=0.0)
    up.start()
    try:
        assert receiver.wait(lambda r: PLANT in r.status, 30), receiver.summary()  # subscribed
        broker.wait_saved()  # the platform's session is on disk, as a real broker's would be
        burst.start()
        # while the burst is publishing, the platform behind it: nothing held back
        assert wait_for(lambda: up.sent_count - len(receiver.alarms) >= 50 and burst.committed < total - 1000, 30,
                        step=0.005), receiver.summary()
        in_flight_at_kill = (burst.committed, up.sent_count, len(receiver.alarms))
        broker.proc.send_signal(signal.SIGKILL)
        broker.stop()
        time.sleep(1.0)  # the burst goes on into the outbox while the broker is away
        broker.start()
        burst.join(60)
        assert burst.error is None and burst.committed == total
        seqs = assert_every_committed_seq_arrived_in_order(receiver, path)
    finally:
        up.stop(2.0)
        sub.loop_stop()
    committed, acked, received = in_flight_at_kill
    assert received < acked <= committed < total, "the broker was not killed with messages in flight"
    assert len(seqs) == total and up.connections >= 2 and up.resent > 0
    keys = [(a["epoch"], a["seq"]) for a in receiver.alarms]  # exactly once per (epoch, seq), in order
    assert len(set(keys)) == len(keys) == total and keys == sorted(keys)
