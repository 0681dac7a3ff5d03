"""The console's devices view and the uplink state, in Chromium against a running agent and a
simulated Modbus PLC: comm state, the rate of reads achieved, errors, the last read's latency and
the driver's planned Modbus requests; the outbox's oldest unsent row in the system view and in
the status JSON while the broker is away."""

from __future__ import annotations

import json
import signal

from agent.broker import free_port
from tests.conftest import config_dict
from tests.helpers import AgentProcess
from tests.modbus.server import start_server
from tests.test_console import plant, shots, wait_for_port  # noqa: F401 - fixtures
from tests.test_operators import http
from tests.webdriver import Browser

DEV = 'document.querySelector(\'#devices tr[data-device="r1-plc"]\')'
PLAN = 'document.querySelector(\'#devices tr[data-details="r1-plc"]\')'


def test_the_devices_view_shows_rate_errors_latency_and_the_modbus_requests(plant, shots, tmp_path):  # noqa: F811
    plc, port, receiver, agent = plant
    with Browser(tmp_path / "browser") as b:
        b.get(f"http://127.0.0.1:{port}/")
        b.click('nav button[data-view="devices"]')
        b.wait(f"return {DEV} && {DEV}.querySelector('.OK') && Number({DEV}.querySelector('.reads').textContent) > 5")
        b.wait(f"return parseFloat({DEV}.querySelector('.rate').textContent) > 2")  # 10/s asked (interval 0.1 s)
        errors = int(b.js(f"return {DEV}.querySelector('.errors').textContent"))  # 0 unless the machine is slow
        assert b.js(f"return {DEV}.querySelector('.latency').textContent").endswith(" ms")
        # the driver's read plan: R101.TI01 at hr:100 and R101.PI01 at hr:102, float32 each: one
        # read of holding registers (function 3) from 100, four registers, two tags
        assert b.js(f"return {PLAN}.querySelector('strong').textContent") == "Modbus requests per poll"
        rows = b.js(f"return [...{PLAN}.querySelectorAll('tr')].map(r => [...r.cells].map(c => c.textContent))")
        assert rows == [["function", "area", "start", "count", "tags"], ["3", "hr", "100", "4", "2"]], rows
        listening = http(port, "GET", "/metrics")[1].decode()
        assert "plantwatch_console_clients 1" in listening and "plantwatch_console_frames_total 0" not in listening
        b.click("#lang")
        b.screenshot(shots / "16-devices.png")
        b.click("#lang")
        b.screenshot(shots / "17-devices-zh.png")

        plc.stop()  # unplugged: errors count, the rate of good and failed reads goes on
        b.wait(f"return {DEV}.querySelector('.COMM_FAIL') && Number({DEV}.querySelector('.errors').textContent) > "
               f"{errors}")
    status, body = http(port, "GET", "/status")
    device = json.loads(body)["devices"]["r1-plc"]
    assert status == 200 and device["state"] == "comm_fail" and device["errors"] > 0 and device["reads"] > device["errors"]
    assert device["interval_s"] == 0.1 and device["latency_ms"] is not None


def test_the_oldest_unsent_row_is_shown_while_the_broker_is_away(tmp_path, write_config, shots):  # noqa: F811
    with start_server() as plc:
        plc.set_value(100, 170.0, type="float32")  # over H: an alarm waits in the outbox too
        data = config_dict()
        port = free_port()
        data["alarm_system"] = {"api_port": port}
        data["uplink"].update(url=f"mqtt://127.0.0.1:{free_port()}")  # nobody listens there
        data["devices"][0].update(url=plc.url, interval_s=0.1, timeout_s=0.3)
        agent = AgentProcess(write_config(data), tmp_path / "agent.log").start()
        try:
            wait_for_port(port, agent)
            with Browser(tmp_path / "browser") as b:
                b.get(f"http://127.0.0.1:{port}/")
                b.click('nav button[data-view="system"]')
                b.click("#lang")  # English
                b.wait("return document.querySelector('#uplinks tr[data-uplink=\"default\"] .oldest')"
                       ".textContent.includes('#')")
                b.wait("return /waiting [1-9]/.test(document.getElementById('outbox-oldest').textContent)")
                b.screenshot(shots / "18-system-outbox-waiting.png")
            doc = json.loads(http(port, "GET", "/status")[1])
            oldest, mine = doc["outbox"]["oldest_unsent"], doc["uplinks"]["default"]["oldest_unsent"]
            assert oldest is not None and oldest["id"] == mine["id"] and oldest["age_s"] >= 1, doc["outbox"]
            assert oldest["lane"] in ("alarm", "telemetry", "status") and oldest["created"].endswith("Z")
            assert sum(doc["outbox"]["depth"].values()) >= 1 and doc["uplinks"]["default"]["connected"] is False
            assert agent.signal(signal.SIGTERM) == 0, agent.output()
        finally:
            agent.kill()
