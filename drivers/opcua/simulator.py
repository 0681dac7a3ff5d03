"""A simulated OPC-UA device for the demo and for tests: an asyncua server on loopback with one
Double variable per tag, at the tag's node id, written from a callback every ``refresh_s``.

Notifications then carry the values as a PLC's server would send them (subscribe mode); reads
see the latest written value (poll mode). No security, anonymous login.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import Callable, Mapping, Sequence

from asyncua import Server, ua

from drivers.base import DeviceSpec, Simulator, TagSpec


class OpcUaSimulator(Simulator):
    """A simulated server at an ``opc.tcp://`` URL; see the module docstring."""

    def __init__(self, device: DeviceSpec, tags: Sequence[TagSpec], values: Callable[[], Mapping[str, float]],
                 refresh_s: float = 0.2):
        self.url = device.url
        self.name = device.name
        self.tags = list(tags)
        self.values = values
        self.refresh_s = refresh_s
        self.server: Server | None = None
        self.nodes: dict[str, object] = {}
        self._task: asyncio.Task | None = None

    async def start(self) -> None:
        if self.server is not None:
            return
        server = Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
        ids = {t.name: ua.NodeId.from_string(t.address) for t in self.tags}
        # a tag's namespace index must exist on the server: register enough of them
        needed = max((i.NamespaceIndex for i in ids.values()), default=1)
        while len(namespaces := await server.get_namespace_array()) <= needed:
            await server.register_namespace(f"urn:plantwatch:simulator:{len(namespaces)}")
        folder = await server.nodes.objects.add_folder(len(await server.get_namespace_array()) - 1, self.name)
        first = self.values()
        for tag in self.tags:
            value = float(first.get(tag.name, 0.0))
            self.nodes[tag.name] = await folder.add_variable(ids[tag.name], tag.name, value,
                                                             varianttype=ua.VariantType.Double)
        await server.start()
        self.server = server
        self._task = asyncio.create_task(self._refresh())

    async def _refresh(self) -> None:
        while True:
            values = self.values()
            for name, node in self.nodes.items():
                v = values.get(name)
                if v is not None and not math.isnan(v):
                    await node.write_value(float(v))  # type: ignore[attr-defined]
            await asyncio.sleep(self.refresh_s)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
        if self.server is not None:
            server, self.server = self.server, None
            self.nodes = {}
            await server.stop()
