"""Commissioning: `plantwatch check CONFIG --connect` reads every point once from real devices
(a pymodbus server, the OPC-UA simulator) and shows value, quality and raw data; a dead device
says what to check while the others are read; `check --points` prints the sign-off table with
the limits, priorities and point codes in force; a coil or discrete input needs no type; and the
agent's comm alarm says when a connection never opened."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import logging
import threading

import pytest

from agent.cli import main
from agent.config import parse
from agent.outbox import Outbox
from agent.runtime import Agent
from drivers.base import DeviceSpec, TagSpec
from drivers.opcua import OpcUaDriver
from tests.conftest import config_dict
from tests.helpers import run_agent_until
from tests.modbus.server import start_server
from tests.opcua.helpers import RequestLog
from tests.test_registry import registry_config


def closed_url() -> str:
    srv = start_server()
    srv.stop()
    return srv.url


def plant(url: str, dead_url: str | None = None) -> dict:
    """A live PLC with a float in order, a float in the wrong word order (Modicon address), a
    scaled integer and a discrete input with no type; optionally a dead PLC with one tag."""
    data = config_dict()
    data["devices"][0].update(url=url, timeout_s=0.5)
    data["tags"] = [
        {"name": "R101.TI01", "device": "r1-plc", "address": "hr:100", "type": "float32", "unit": "°C"},
        {"name": "R101.PI01", "device": "r1-plc", "address": "40103", "type": "float32", "unit": "MPa"},
        {"name": "R101.LI01", "device": "r1-plc", "address": "hr:110", "type": "uint16", "scale": 0.1, "unit": "%"},
        {"name": "DC1.SPARK", "device": "r1-plc", "address": "10004", "alarm_on": True, "desc": "火花探测"},
    ]
    if dead_url:
        data["devices"].append({"name": "dead-plc", "driver": "modbus", "url": dead_url, "timeout_s": 0.5})
        data["tags"].append({"name": "X.TI02", "device": "dead-plc", "address": "hr:0", "type": "int16"})
    return data


def serve(srv) -> None:
    srv.set_value(100, 12.5, "float32")
    srv.set_value(102, 1.25, "float32", "CDAB")  # the meter sends CDAB; the config says ABCD
    srv.set_value(110, 555, "uint16")
    srv.set_bits(3, [True], area="di")


def rows_of(out: str) -> dict[str, list[str]]:
    """The --connect table's tag lines by tag name, split on the column gaps."""
    rows = {}
    for line in out.splitlines():
        if line.startswith("  ") and not line.strip().startswith("tag "):
            cells = [c.strip() for c in line.strip().split("  ") if c.strip()]
            rows[cells[0]] = cells
    return rows


def test_connect_shows_values_raw_words_and_other_orders_and_goes_on_past_a_dead_device(write_config, capsys):
    dead = closed_url()
    with start_server() as srv:
        serve(srv)
        path = write_config(plant(srv.url, dead))
        code = main(["check", str(path), "--connect"])
        out = capsys.readouterr().out
        assert srv.function_codes <= {1, 2, 3, 4} and srv.function_codes  # it read, and only read
    assert code == 1, out
    rows = rows_of(out)
    assert rows["R101.TI01"][:6] == ["R101.TI01", "hr:100 = 40101", "float32 ABCD", "12.5 °C", "GOOD", "0x4148 0x0000"]
    pi = rows["R101.PI01"]
    assert pi[1:3] == ["hr:102 = 40103", "float32 ABCD"] and pi[4:6] == ["GOOD", "0x0000 0x3FA0"]
    assert "CDAB 1.25" in pi[6]  # the wrong word order shows: the right value is under CDAB
    assert rows["R101.LI01"][1:6] == ["hr:110 = 40111", "uint16 ×0.1", "55.5 %", "GOOD", "0x022B"]
    assert rows["DC1.SPARK"][1:6] == ["di:3 = 10004", "bool", "1", "GOOD", "1"]
    assert rows["X.TI02"][3:5] == ["-", "COMM_FAIL"]
    assert (f"cannot connect to {dead.removeprefix('tcp://')} (connection refused) — never connected since start; "
            "check the address and port of device 'dead-plc', that the PLC's Modbus TCP server is on, and the "
            "firewall") == rows["X.TI02"][6]
    assert f"device r1-plc: modbus {srv.url}: 4 of 4 tags GOOD" in out
    assert f"device dead-plc: modbus {dead}: 0 of 1 tags GOOD" in out
    assert out.splitlines()[-1] == "4 of 5 points GOOD, 1 not"


def test_connect_as_json_and_exit_0_when_every_point_is_good(write_config, capsys):
    with start_server() as srv:
        serve(srv)
        path = write_config(plant(srv.url))
        assert main(["check", str(path), "--connect", "--format", "json"]) == 0
        doc = json.loads(capsys.readouterr().out)
        assert main(["check", str(path), "--connect"]) == 0
        assert capsys.readouterr().out.splitlines()[-1] == "4 of 4 points GOOD"
        assert srv.function_codes <= {1, 2, 3, 4}
    by_tag = {r["tag"]: r for r in doc}
    assert by_tag["R101.PI01"]["alternatives"]["CDAB"] == 1.25 and by_tag["R101.PI01"]["raw"] == "0x0000 0x3FA0"
    assert by_tag["DC1.SPARK"]["type"] == "bool" and by_tag["DC1.SPARK"]["value"] == 1.0
    assert all(r["quality"] == "GOOD" and r["error"] is None for r in doc)


def test_check_options_that_do_not_go_together_are_usage_errors(write_config, capsys):
    path = write_config(config_dict())
    assert main(["check", str(path), "--connect", "--format", "csv"]) == 2
    assert main(["check", str(path), "--connect", "--points", "--format", "json"]) == 2
    assert main(["check", str(path), "--format", "csv"]) == 2
    assert "--format goes with --points or --connect" in capsys.readouterr().err
    capsys.readouterr()


class ThreadedSimulator:
    """The OPC-UA driver's simulator on its own event loop in a thread, so the command line's
    own asyncio.run can reach it."""

    def __init__(self, device: DeviceSpec, tags: list[TagSpec], values: dict[str, float]):
        self.sim = OpcUaDriver.simulator(device, tags, lambda: values)
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> ThreadedSimulator:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.sim.start(), self.loop).result(30)
        return self

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.sim.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def test_connect_reads_an_opcua_device_once_and_names_a_missing_node(write_config, capsys):
    from agent.broker import free_port

    url = f"opc.tcp://127.0.0.1:{free_port()}/plc"
    data = config_dict()
    data["devices"] = [{"name": "al-plc", "driver": "opcua", "url": url, "timeout_s": 2.0}]
    data["tags"] = [{"name": "CAST.TI01", "device": "al-plc", "address": "ns=2;s=CAST.TI01", "unit": "°C",
                     "scale": 2.0},
                    {"name": "CAST.GONE", "device": "al-plc", "address": "ns=2;s=CAST.GONE"}]
    served = [TagSpec(0, "CAST.TI01", "al-plc", "ns=2;s=CAST.TI01")]
    with RequestLog() as log, ThreadedSimulator(DeviceSpec("al-plc", "opcua", url), served, {"CAST.TI01": 341.5}):
        code = main(["check", str(write_config(data)), "--connect"])
    out = capsys.readouterr().out
    assert code == 1, out
    rows = rows_of(out)
    assert rows["CAST.TI01"][1:6] == ["ns=2;s=CAST.TI01", "(server) ×2", "683 °C", "GOOD", "Double 341.5"]
    assert rows["CAST.GONE"][4:] == ["BAD", "BadNodeIdUnknown", "BadNodeIdUnknown"]
    assert log.counts["ReadRequest"] >= 1 and log.counts["WriteRequest"] == 0 and log.counts["CallRequest"] == 0
    assert log.counts["CreateMonitoredItemsRequest"] == 0  # one Read, no subscription
    # nothing listening any more: the endpoint, the server and security to check
    assert main(["check", str(write_config(data)), "--connect"]) == 1
    rows = rows_of(capsys.readouterr().out)
    assert rows["CAST.TI01"][3:5] == ["-", "COMM_FAIL"]
    assert f"check the endpoint URL of device 'al-plc' ({url}), that the server is on" in rows["CAST.TI01"][6]
    port = url.split(":")[2].split("/")[0]
    assert rows["CAST.TI01"][6].startswith(f"cannot connect to 127.0.0.1:{port} (connection refused) — ")


def test_points_table_shows_limits_in_force_priorities_and_point_codes(write_config, capsys):
    data = registry_config()
    data["tags"][0]["detectors"] = ["ewma"]
    data["tags"][1].update(priority={"H": 1, "L": 3}, roc={"max_per_s": 0.5})
    data["tags"].append({"name": "GD202.H2S", "device": "r1-plc", "address": "30011", "type": "int16", "scale": 0.1,
                         "preset": "gb50493-toxic", "gas": "H2S", "unit": "ppm", "equipment_code": "GD202",
                         "indicator_code": "H2S"})
    data["tags"].append({"name": "DC1.SPARK", "device": "r1-plc", "address": "di:3", "alarm_on": True,
                         "on_delay_s": 2.0, "priority": 1, "equipment_code": "DC1", "indicator_code": "SPK"})
    data["tags"].append({"name": "R101.DT", "expr": "R101.TI01 - R101.PI01", "alarms": {"h": 5.0}})
    path = write_config(data)
    assert main(["check", str(path), "--points", "--format", "csv"]) == 0
    rows = {r["tag"]: r for r in csv.DictReader(io.StringIO(capsys.readouterr().out))}
    ti = rows["R101.TI01"]
    assert (ti["address"], ti["type"], ti["LL"], ti["L"], ti["H"], ti["HH"]) == \
        ("hr:100 = 40101", "float32 ABCD", "10", "20", "160", "180")
    assert ti["priority"] == "HH 1, H 2, L 2, LL 1, ewma 2, sensor 2" and ti["point"] == "640100000001HZ01R101T01"
    assert ti["detectors"] == "ewma" and ti["range"] == "-50..400"
    assert ti["position"] == "TI-101"
    # a priority table: each family's levels as the alarm manager looks them up
    assert rows["R101.PI01"]["priority"].startswith("roc H 1, roc L 3, ")
    # a combustible preset: its HH and unit filled in, the tag's own H, its own point code
    ch4 = rows["GD201.CH4"]
    assert (ch4["H"], ch4["HH"], ch4["unit"], ch4["preset"], ch4["priority"], ch4["point"]) == \
        ("20", "50", "%LEL", "gb50493", "HH 1, H 2, sensor 2", "640100000001-GD201")
    # a toxic preset: both limits from the gas table (100 % and 200 % OEL of H2S in ppm)
    h2s = rows["GD202.H2S"]
    assert (h2s["address"], h2s["type"], h2s["scale"], h2s["H"], h2s["HH"], h2s["preset"]) == \
        ("ir:10 = 30011", "int16", "×0.1", "7", "14", "gb50493-toxic H2S")
    assert h2s["point"] == "640100000001HZ01GD202H2S"
    spark = rows["DC1.SPARK"]
    assert (spark["type"], spark["discrete"], spark["priority"]) == ("bool", "alarm on true, on delay 2 s", "ON 1, sensor 1")
    assert rows["P101.RUN"]["H"] == "" and rows["P101.RUN"]["priority"] == "sensor 2"
    # a computed tag: its expression where a read tag has its address, no word order
    dt = rows["R101.DT"]
    assert (dt["device"], dt["address"], dt["type"], dt["H"]) == ("", "= R101.TI01 - R101.PI01", "float64", "5")
    assert main(["check", str(path), "--points"]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:4] == ["tag", "device", "address", "type"]
    assert next(line for line in text if line.startswith("GD202.H2S")).split()[:4] == \
        ["GD202.H2S", "r1-plc", "ir:10", "="]


def test_a_coil_or_discrete_input_needs_no_type_and_its_alarm_works():
    data = config_dict()
    data["tags"] = [{"name": "DC1.SPARK", "device": "r1-plc", "address": "di:3", "alarm_on": True},
                    {"name": "XV101.CMD", "device": "r1-plc", "address": "00001", "feedback": "XV101.ZSO",
                     "mismatch_s": 1.0},
                    {"name": "XV101.ZSO", "device": "r1-plc", "address": "10002"}]
    cfg = parse(data)
    assert [t.spec.type for t in cfg.tags] == ["bool", "bool", "bool"]
    assert "discrete" in cfg.tags[0].families and "mismatch" in cfg.tags[1].families
    data["tags"].append({"name": "BAD", "device": "r1-plc", "address": "co:4", "type": "float32"})
    with pytest.raises(Exception, match=r"tags\[3\] \(BAD\).type: co holds single bits: type must be bool"):
        parse(data)


def test_the_comm_alarm_says_a_connection_never_opened_and_the_live_device_alarms(tmp_path, mosquitto, caplog):
    dead = closed_url()
    with start_server() as srv:
        srv.set_bits(3, [True], area="di")
        data = config_dict()
        data["agent"]["data_dir"] = str(tmp_path / "data")
        data["uplink"]["url"] = mosquitto.url
        data["devices"] = [{"name": "dc-plc", "driver": "modbus", "url": srv.url, "interval_s": 0.1, "timeout_s": 0.5},
                           {"name": "plc1", "driver": "modbus", "url": dead, "interval_s": 0.1, "timeout_s": 0.5}]
        data["tags"] = [{"name": "DC1.SPARK", "device": "dc-plc", "address": "10004", "alarm_on": True,
                         "desc": "1#除尘器火花"},
                        {"name": "R1.TI01", "device": "plc1", "address": "hr:0", "type": "int16"}]
        cfg = parse(data, base=tmp_path)
        agent = Agent(cfg)
        alarms = agent.pipeline.manager.alarms
        with caplog.at_level(logging.WARNING, logger="agent.runtime"):
            run_agent_until(agent, lambda: "plc1/comm" in alarms and "DC1.SPARK/discrete" in alarms)
        assert srv.function_codes == {2}
    stored = {a["id"]: a for a in Outbox(cfg.agent.data_dir / "outbox.db").alarms()}
    comm = stored["plc1/comm"]
    assert comm["state"] == "active"
    assert comm["message"] == (
        f"设备 plc1 通讯中断 communication lost: cannot connect to {dead.removeprefix('tcp://')} (connection refused) "
        "— never connected since start; check the address and port of device 'plc1', that the PLC's Modbus TCP "
        "server is on, and the firewall")
    assert stored["DC1.SPARK/discrete"]["state"] == "active" and stored["DC1.SPARK/discrete"]["level"] == "ON"
    assert any("device plc1: cannot connect to" in r.getMessage() and "never connected since start" in r.getMessage()
               for r in caplog.records)


@pytest.mark.parametrize("mode", ["subscribe", "poll"])
def test_an_opcua_session_that_never_opened_says_what_to_check(mode):
    from agent.broker import free_port

    url = f"opc.tcp://127.0.0.1:{free_port()}/plc"
    driver = OpcUaDriver(DeviceSpec("al-plc", "opcua", url, interval_s=0.1, options={"mode": mode}),
                         [TagSpec(0, "CAST.TI01", "al-plc", "ns=2;s=CAST.TI01")])

    async def first_error() -> str | None:
        try:
            async for batch in driver.batches():
                return batch.error
        finally:
            await driver.close()
        return None

    assert asyncio.run(first_error()) == (
        f"cannot connect to 127.0.0.1:{url.split(':')[2].split('/')[0]} (connection refused) — never connected "
        f"since start; check the endpoint URL of device 'al-plc' ({url}), that the server is on, that the server "
        "allows security None")


def test_probe_of_an_opcua_endpoint_nobody_serves_says_what_to_check():
    from agent.broker import free_port
    from drivers.base import DriverError
    from drivers.opcua.probe import probe

    port = free_port()
    with pytest.raises(DriverError) as info:
        asyncio.run(probe(f"opc.tcp://127.0.0.1:{port}/plc", timeout=1.0))
    assert str(info.value) == f"cannot connect to 127.0.0.1:{port} (connection refused) — check the endpoint URL, " \
                              "that the server is on"
