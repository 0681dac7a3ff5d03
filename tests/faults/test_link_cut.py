"""The link between agent and broker goes silent for 30 s while the plant keeps alarming.

agent -> TcpProxy -> mosquitto. During the cut the proxy swallows every byte and holds new
connections open without answering: no FIN, no RST, exactly what TCP cannot see. The agent
must find the dead link by its MQTT keepalive, keep committing alarms, and replay them in order
once the link is back; the broker, for its part, publishes the agent's will (offline).
"""

from __future__ import annotations

import signal
import time

from agent.receiver import Receiver, connect
from tests.faults.helpers import (
    PLANT,
    Flipper,
    assert_every_committed_seq_arrived_in_order,
    committed_seqs,
    plant_config,
    tag_addresses,
)
from tests.faults.tcpproxy import TcpProxy
from tests.helpers import AgentProcess
from tests.modbus.server import start_server

CUT_S = 30.0


def test_link_cut_for_30_s_loses_no_alarm(tmp_path, mosquitto, write_config):
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT)
    with start_server(holding={}) as plc, TcpProxy(mosquitto.port) as proxy:
        for a in tag_addresses():
            plc.set_value(a, 120.0, type="float32")
        config = write_config(plant_config(plc.url, proxy.url, keepalive_s=2.0))
        agent = AgentProcess(config, tmp_path / "agent.log").start()
        flipper = Flipper(plc, tag_addresses(), period=0.5)
        try:
            assert receiver.wait(lambda r: r.plants.get(PLANT) and r.plants[PLANT].online, 30), agent.output()
            flipper.start()
            assert receiver.wait(lambda r: len(r.alarms) >= 8, 20), agent.output()

            proxy.cut()
            cut_at = time.monotonic()
            before_cut = len(receiver.alarms)
            # the broker misses the agent's keepalive and publishes its will
            assert receiver.wait(lambda r: r.plants[PLANT].online is False, 20), agent.output()
            time.sleep(max(0.0, CUT_S - (time.monotonic() - cut_at)))
            during_cut = committed_seqs(tmp_path / "data" / "outbox.db")
            proxy.restore()

            assert receiver.wait(lambda r: r.plants[PLANT].online is True, 30), agent.output()
            flipper.stop()
            time.sleep(1.0)  # the last transitions to normal are committed and published
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            flipper.stop()
            agent.kill()
            sub.loop_stop()
    seqs = assert_every_committed_seq_arrived_in_order(receiver, tmp_path / "data" / "outbox.db")
    assert len(during_cut) > before_cut + 8, "no alarms were raised while the link was cut"
    assert len(seqs) >= len(during_cut)
    log = agent.output()
    # the agent found the dead link itself (MQTT keepalive), not by a TCP error
    assert "keepalive timeout" in log, log
    assert "Traceback" not in log
