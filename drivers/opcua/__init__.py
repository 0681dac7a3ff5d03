"""OPC-UA driver package: subscriptions or batched reads, security, probe and certificates."""

from drivers.opcua.driver import OpcUaDriver

__all__ = ["OpcUaDriver"]
