"""Browse an OPC-UA server's address space for integrators (``plantwatch probe opc.tcp://...``).

Lists every variable below the Objects folder, down to ``depth`` levels, with its node id (the
form a tag's ``address`` takes), data type and current value. Uses only Browse and Read.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

from asyncua import Client, ua

from drivers.base import DeviceSpec, DriverError
from drivers.opcua import config, diagnose, security
from drivers.opcua.guard import guard

_READ_BATCH = 500


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


async def probe(url: str, depth: int = 3, timeout: float = 5.0, **security_options: Any) -> list[str]:
    """Lines ``node-id  type  value  path`` for the variables under Objects (namespace 0 skipped).

    ``security_options`` are the device keys of docs/DRIVERS.md (security_policy, security_mode,
    cert_file, key_file, trust, username, password_file); a bad one raises ValueError.
    """
    spec = DeviceSpec(name="probe", driver="opcua", url=url, timeout_s=timeout, options=security_options)
    opts, problems = config.parse(spec, [])
    if opts is None or problems:
        raise ValueError("; ".join(f"{p.path}: {p.message}" for p in problems))
    client = guard(Client(url, timeout=timeout))
    await security.apply(client, opts)
    try:
        await asyncio.wait_for(client.connect(), timeout * 2)
    except (OSError, TimeoutError) as exc:
        # the words of check --connect: where, why, and what to check
        raise DriverError(f"{diagnose.failure(exc, opts)} — check the endpoint URL, that the server is on"
                          + (", and the security settings" if opts.secure else "")) from None
    try:
        return await asyncio.wait_for(_walk(client, depth), timeout * 20)
    finally:
        with contextlib.suppress(Exception):
            await client.disconnect()


async def _walk(client: Client, depth: int) -> list[str]:
    variables: list[tuple[ua.NodeId, str]] = []
    level = [(client.nodes.objects, "")]
    seen: set[ua.NodeId] = set()
    for _ in range(max(depth, 1)):
        nxt = []
        for node, path in level:
            for ref in await node.get_children_descriptions():
                nid = ref.NodeId
                if nid in seen or nid.NamespaceIndex == 0:
                    continue
                seen.add(nid)
                child_path = f"{path}/{ref.BrowseName.Name}" if path else ref.BrowseName.Name
                if ref.NodeClass == ua.NodeClass.Variable:
                    variables.append((nid, child_path))
                if ref.NodeClass in (ua.NodeClass.Object, ua.NodeClass.Variable):
                    nxt.append((client.get_node(nid), child_path))
        level = nxt
        if not level:
            break
    lines = []
    type_names: dict[ua.NodeId, str] = {}
    for start in range(0, len(variables), _READ_BATCH):
        chunk = variables[start:start + _READ_BATCH]
        ids = [nid for nid, _ in chunk]
        values = await client.uaclient.read_attributes(ids, ua.AttributeIds.Value)
        types = await client.uaclient.read_attributes(ids, ua.AttributeIds.DataType)
        for (nid, path), dv, tv in zip(chunk, values, types, strict=True):
            type_id = tv.Value.Value if tv.Value is not None else None
            if isinstance(type_id, ua.NodeId) and type_id not in type_names:
                if type_id.NamespaceIndex == 0 and type_id.Identifier in ua.ObjectIdNames:
                    type_names[type_id] = ua.ObjectIdNames[type_id.Identifier]
                else:
                    name = await client.get_node(type_id).read_browse_name()
                    type_names[type_id] = name.Name
            tname = type_names.get(type_id, "?") if isinstance(type_id, ua.NodeId) else "?"
            status = dv.StatusCode
            if status is not None and not status.is_good():
                shown = status.name
            else:
                shown = _fmt(dv.Value.Value if dv.Value is not None else None)
            lines.append(f"{nid.to_string()}  {tname}  {shown}  ({path})")
    return lines
