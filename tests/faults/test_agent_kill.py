"""The agent SIGKILLed at random moments, 20 times, while the plant keeps alarming.

Each run is killed at a random point after it starts polling: while committing, while
publishing, while replaying what the previous run left unsent. Whatever a run committed, a
later run sends: the platform ends up with every seq in the outbox, in order.
"""

from __future__ import annotations

import random
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
    wait_for,
)
from tests.helpers import AgentProcess
from tests.modbus.server import start_server

KILLS = 20


def test_agent_sigkilled_20_times_loses_no_alarm(tmp_path, mosquitto, write_config):
    rng = random.Random(20261128)
    receiver = Receiver(emit=lambda line: None)
    sub = connect(receiver, mosquitto.url, PLANT)
    outbox = tmp_path / "data" / "outbox.db"
    log = tmp_path / "agent.log"
    with start_server(holding={}) as plc:
        for a in tag_addresses():
            plc.set_value(a, 120.0, type="float32")
        config = write_config(plant_config(plc.url, mosquitto.url))
        flipper = Flipper(plc, tag_addresses(), period=0.15)
        flipper.start()
        agent = None
        try:
            for run in range(1, KILLS + 1):
                agent = AgentProcess(config, log).start()
                # polling has begun once the run says so; kill it somewhere in the next 1.2 s
                assert wait_for(lambda n=run, a=agent: a.output().count(" running: plant ") >= n, 30), agent.output()
                time.sleep(rng.uniform(0.0, 1.2))
                agent.kill()
                assert agent.proc.returncode == -signal.SIGKILL
            flipper.stop()
            committed_while_killing = committed_seqs(outbox)
            agent = AgentProcess(config, log).start()  # the survivor sends what is left
            assert wait_for(lambda: agent.output().count(" running: plant ") > KILLS, 30), agent.output()
            assert receiver.wait(lambda r: len(r.alarms) >= len(committed_while_killing), 60), receiver.summary()
            time.sleep(0.5)
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            flipper.stop()
            if agent is not None:
                agent.kill()
            sub.loop_stop()
    seqs = assert_every_committed_seq_arrived_in_order(receiver, outbox)
    assert len(committed_while_killing) >= KILLS, "too few alarms were raised to prove anything"
    assert len(seqs) >= len(committed_while_killing)
    assert agent.output().count(" running: plant ") == KILLS + 1
