"""Read-only: the driver (subscribe and poll mode, reconnects, probe) sends the server only
session, discovery, Read, Browse and subscription/monitored-item requests, never Write or Call."""

from __future__ import annotations

import contextlib

import pytest
from asyncua import Client, ua

from drivers.opcua import OpcUaDriver
from drivers.opcua.guard import ALLOWED_REQUESTS, ReadOnlyViolation, guard
from drivers.opcua.probe import probe
from tests.faults.tcpproxy import TcpProxy
from tests.opcua.helpers import Collector, PlantServer, RequestLog, device, plant_tags, run

ALLOWED = {
    "GetEndpointsRequest", "FindServersRequest", "CreateSessionRequest", "ActivateSessionRequest",
    "CloseSessionRequest", "ReadRequest", "BrowseRequest", "BrowseNextRequest",
    "CreateSubscriptionRequest", "ModifySubscriptionRequest", "DeleteSubscriptionsRequest",
    "CreateMonitoredItemsRequest", "DeleteMonitoredItemsRequest", "PublishRequest", "RepublishRequest",
}


def test_driver_sends_no_write_and_no_call():
    async def main():
        with RequestLog() as log:
            async with PlantServer() as srv, TcpProxy(srv.port) as link:
                url = f"opc.tcp://127.0.0.1:{link.port}/plant"
                sub = OpcUaDriver(device(url, publishing_interval_ms=50, reconnect_max_s=0.5), plant_tags())
                poll = OpcUaDriver(device(url, mode="poll", interval_s=0.1), plant_tags())
                async with Collector(sub) as c1, Collector(poll) as c2:
                    await c1.wait_for(lambda c: c.last(0) is not None, what="subscription data")
                    await c2.wait_for(lambda c: len(c.batches) >= 2, what="polls")
                    link.drop()
                    await c1.wait_for(lambda c: c.batches[-1].error is not None, what="outage")
                    await srv.set("R101.TI01", 91.0)
                    await c1.wait_for(lambda c: c.last(0)[0] == 91.0, what="data after reconnect")
                    await c2.wait_for(lambda c: c.last(0)[0] == 91.0, what="poll after reconnect")
                lines = await probe(srv.url, depth=3)
                assert any("R101.TI01" in line for line in lines)
        assert log.counts["CreateMonitoredItemsRequest"] >= 2 and log.counts["ReadRequest"] >= 2
        assert log.counts["BrowseRequest"] >= 1
        assert log.counts["WriteRequest"] == 0 and log.counts["CallRequest"] == 0
        assert set(log.counts) <= ALLOWED, set(log.counts) - ALLOWED

    run(main())


def test_request_log_sees_a_write_when_one_is_sent():
    # the proof above is only as good as the log: a real Write and Call must show up in it
    async def main():
        with RequestLog() as log:
            async with PlantServer() as srv:
                async with Client(srv.url) as client:
                    # the server may refuse either; what matters is that the request arrived
                    with contextlib.suppress(ua.UaStatusCodeError):
                        await client.get_node(srv.nodes["R101.TI01"].nodeid).write_value(
                            ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
                    with contextlib.suppress(ua.UaStatusCodeError):
                        await client.get_node(ua.ObjectIds.Server).call_method(
                            ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems), ua.Variant(1, ua.VariantType.UInt32))
        assert log.counts["WriteRequest"] == 1 and log.counts["CallRequest"] == 1

    run(main())


def test_every_service_off_the_allow_list_is_refused_before_it_is_sent():
    """A guarded client (as the driver and the probe make them) tries every service request
    asyncua knows that is not on the allow-list: each is refused in the client, the server
    receives none of them, and the plant value is unchanged."""
    every = {n for n in dir(ua) if n.endswith("Request") and hasattr(getattr(ua, n), "RequestHeader")}
    refused = sorted(n for n in every if getattr(ua, n) not in ALLOWED_REQUESTS)
    assert {"WriteRequest", "CallRequest", "AddNodesRequest", "DeleteNodesRequest", "HistoryUpdateRequest",
            "AddReferencesRequest", "DeleteReferencesRequest", "SetMonitoringModeRequest", "SetTriggeringRequest",
            "TransferSubscriptionsRequest", "RegisterServerRequest", "RegisterServer2Request"} <= set(refused)

    async def main():
        with RequestLog() as log:
            async with PlantServer() as srv:
                async with guard(Client(srv.url)) as client:
                    protocol = client.uaclient.protocol
                    for name in refused:
                        sent_before = protocol._request_id
                        with pytest.raises(ReadOnlyViolation, match=f"OPC-UA service {name} refused"):
                            await protocol.send_request(getattr(ua, name)())
                        assert protocol._request_id == sent_before, name  # no message id used: nothing written
                    node = client.get_node(srv.nodes["R101.TI01"].nodeid)
                    with pytest.raises(ReadOnlyViolation):
                        await node.write_value(ua.DataValue(ua.Variant(1.0, ua.VariantType.Double)))
                    with pytest.raises(ReadOnlyViolation):
                        await client.get_node(ua.ObjectIds.Server).call_method(
                            ua.NodeId(ua.ObjectIds.Server_GetMonitoredItems), ua.Variant(1, ua.VariantType.UInt32))
                    assert await node.read_value() == 85.0  # the session still works, and reads
        assert not set(log.counts) & set(refused), set(log.counts) & set(refused)
        assert log.counts["ReadRequest"] >= 1

    run(main())
