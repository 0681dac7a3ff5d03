"""The read-only wall of the OPC-UA driver: an allow-list of the service requests a client may send.

Every client the driver creates (the live session, the probe, a one-shot read) passes through
``guard``: its transport protocol checks each outgoing request against ``ALLOWED_REQUESTS``
before the request is encoded, so a Write, a Call or any other service that changes the server
(nodes, references, history, triggering, monitoring modes, another session's subscriptions) is
refused with ``ReadOnlyViolation`` and nothing reaches the wire. The list holds what the driver
needs to connect securely, browse, read and subscribe, and nothing else.
"""

from __future__ import annotations

from typing import Any

from asyncua import Client, ua

#: the services the driver uses: channel and session, discovery, browse, read, subscriptions
ALLOWED_REQUESTS: frozenset[type] = frozenset({
    ua.OpenSecureChannelRequest, ua.CloseSecureChannelRequest,
    ua.GetEndpointsRequest, ua.FindServersRequest,
    ua.CreateSessionRequest, ua.ActivateSessionRequest, ua.CloseSessionRequest,
    ua.BrowseRequest, ua.BrowseNextRequest, ua.TranslateBrowsePathsToNodeIdsRequest,
    ua.RegisterNodesRequest, ua.UnregisterNodesRequest,
    ua.ReadRequest,
    ua.CreateSubscriptionRequest, ua.ModifySubscriptionRequest, ua.DeleteSubscriptionsRequest,
    ua.SetPublishingModeRequest, ua.PublishRequest, ua.RepublishRequest,
    ua.CreateMonitoredItemsRequest, ua.ModifyMonitoredItemsRequest, ua.DeleteMonitoredItemsRequest,
})


class ReadOnlyViolation(RuntimeError):
    """Something tried to send an OPC-UA service request that is not on the allow-list."""


def check(request: Any) -> None:
    if type(request) not in ALLOWED_REQUESTS:
        raise ReadOnlyViolation(f"OPC-UA service {type(request).__name__} refused: plantwatch only reads")


def guard(client: Client) -> Client:
    """``client`` with every transport it opens checking each request before it is sent."""
    ua_client = client.uaclient
    make_protocol = ua_client._make_protocol

    def guarded_protocol():
        protocol = make_protocol()
        send = protocol._send_request

        def checked_send(request: Any, *args: Any, **kwargs: Any):
            check(request)
            return send(request, *args, **kwargs)

        protocol._send_request = checked_send
        return protocol

    ua_client._make_protocol = guarded_protocol
    return client
