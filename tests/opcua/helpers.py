"""Real OPC-UA servers for the driver tests: an in-process asyncua plant server and helpers.

The plant server records every service request it receives (by request type) so tests can prove
that the driver never sent a Write or a Call.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
from asyncua import Server, ua
from asyncua.crypto.permission_rules import User, UserRole
from asyncua.crypto.truststore import TrustStore
from asyncua.crypto.validator import CertificateValidator, CertificateValidatorOptions
from asyncua.server import internal_subscription
from asyncua.server.monitored_item_service import MonitoredItemService, MonitoredItemValues
from asyncua.server.uaprocessor import UaProcessor
from asyncua.server.user_managers import UserManager

from agent.broker import free_port
from drivers.base import DeviceSpec, SampleBatch, TagSpec
from drivers.opcua import OpcUaDriver

NS_URI = "urn:plantwatch:test:plant"
SERVER_URI = "urn:plantwatch:test:server"

# name -> (initial value, variant type); each is ns=2;s=<name>
PLANT_VARIABLES: dict[str, tuple[Any, ua.VariantType]] = {
    "R101.TI01": (85.0, ua.VariantType.Double),
    "R101.PI01": (1.5, ua.VariantType.Float),
    "R101.FI01": (12.0, ua.VariantType.Double),
    "R101.RUN": (True, ua.VariantType.Boolean),
    "R101.CNT": (7, ua.VariantType.Int32),
}

_REQUEST_NAMES = {
    getattr(ua.ObjectIds, name): name.removesuffix("_Encoding_DefaultBinary")
    for name in dir(ua.ObjectIds)
    if name.endswith("Request_Encoding_DefaultBinary")
}


class RequestLog:
    """Counts every service request an asyncua server in this process processes."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._original = None

    def __enter__(self) -> RequestLog:
        original = UaProcessor._process_message
        log = self

        async def recording(proc, typeid, requesthdr, seqhdr, body):
            log.counts[_REQUEST_NAMES.get(typeid.Identifier, f"i={typeid.Identifier}")] += 1
            return await original(proc, typeid, requesthdr, seqhdr, body)

        self._original = original
        UaProcessor._process_message = recording
        return self

    def __exit__(self, *exc: object) -> None:
        UaProcessor._process_message = self._original


class _PercentDeadbandItems(MonitoredItemService):
    """asyncua's monitored items plus PercentDeadband as OPC UA Part 4 (7.22.2) and Part 8 define it.

    The asyncua 2.1 server accepts a percent deadband on any node and then reports every change
    (it logs "DeadbandType Percent is not implemented"). Here, as in node-opcua and PLC servers:
    a percent deadband on a node without an EURange property is refused with
    BadMonitoredItemFilterUnsupported, a value outside 0..100 with BadDeadbandFilterInvalid, and a
    change is reported only when it differs from the last reported value by more than
    DeadbandValue / 100 x (EURange.High - EURange.Low).
    """

    async def _create_data_change_monitored_item(
        self, params: ua.MonitoredItemCreateRequest
    ) -> ua.MonitoredItemCreateResult:
        flt = params.RequestedParameters.Filter
        # decoded filters are the generated DataChangeFilter class, not ua.DataChangeFilter (a
        # subclass of it), hence the attribute test instead of isinstance
        if getattr(flt, "DeadbandType", None) != ua.DeadbandType.Percent:
            return await super()._create_data_change_monitored_item(params)
        eu_range = self._eu_range(params.ItemToMonitor.NodeId)
        refusal = None
        if not 0.0 <= flt.DeadbandValue <= 100.0:
            refusal = ua.StatusCodes.BadDeadbandFilterInvalid
        elif eu_range is None:
            refusal = ua.StatusCodes.BadMonitoredItemFilterUnsupported
        if refusal is not None:
            result = ua.MonitoredItemCreateResult()
            result.StatusCode = ua.StatusCode(refusal)
            return result
        result = await super()._create_data_change_monitored_item(params)
        if result.StatusCode.is_good():
            # the initial value was reported inside the call above; later changes use the span
            self._monitored_items[result.MonitoredItemId].mvalue.eu_span = eu_range.High - eu_range.Low
        return result

    def _eu_range(self, nodeid: ua.NodeId) -> ua.Range | None:
        node = self.aspace.get(nodeid)
        for ref in node.references if node is not None else ():
            if (ref.IsForward and ref.ReferenceTypeId == ua.NodeId(ua.ObjectIds.HasProperty)
                    and ref.BrowseName == ua.QualifiedName("EURange", 0)):
                value = self.aspace.read_attribute_value(ref.NodeId, ua.AttributeIds.Value).Value
                return value.Value if value is not None and isinstance(value.Value, ua.Range) else None
        return None

    def _is_deadband_exceeded(self, values: MonitoredItemValues, flt: ua.DataChangeFilter) -> bool:
        if flt.DeadbandType != ua.DeadbandType.Percent:
            return super()._is_deadband_exceeded(values, flt)
        current = values.get_current_datavalue()
        last = getattr(values, "last_reported", None)
        if last is None or last.StatusCode != current.StatusCode or last.Value is None or current.Value is None:
            exceeded = True
        else:
            exceeded = abs(current.Value.Value - last.Value.Value) > flt.DeadbandValue / 100.0 * values.eu_span
        if exceeded:
            values.last_reported = current
        return exceeded


class PercentDeadbands:
    """While active, asyncua servers created in this process apply percent deadbands (see above)."""

    def __enter__(self) -> PercentDeadbands:
        self._original = internal_subscription.MonitoredItemService
        internal_subscription.MonitoredItemService = _PercentDeadbandItems
        return self

    def __exit__(self, *exc: object) -> None:
        internal_subscription.MonitoredItemService = self._original


class PasswordUsers(UserManager):
    """Accepts exactly one user name and password; anonymous logins are refused."""

    def __init__(self, username: str, password: str):
        self.username, self.password = username, password
        self.attempts: list[str] = []

    def get_user(self, iserver, username=None, password=None, certificate=None):
        self.attempts.append(username or "")
        if username == self.username and password == self.password:
            return User(role=UserRole.User)
        return None


class PlantServer:
    """An asyncua server with a few plant tags, on a free loopback port, started and stopped by tests."""

    def __init__(
        self,
        port: int | None = None,
        *,
        policies: Iterable[ua.SecurityPolicyType] = (ua.SecurityPolicyType.NoSecurity,),
        cert: Path | None = None,
        key: Path | None = None,
        trusted_clients: Iterable[Path] | None = None,
        users: UserManager | None = None,
        extra: int = 0,
        eu_ranges: dict[str, tuple[float, float]] | None = None,
    ):
        self.port = port or free_port()
        self.url = f"opc.tcp://127.0.0.1:{self.port}/plant"
        self.policies = list(policies)
        self.cert, self.key = cert, key
        self.trusted_clients = list(trusted_clients) if trusted_clients is not None else None
        self.users = users
        self.extra = extra
        self.eu_ranges = eu_ranges or {}
        self.server: Server | None = None
        self.nodes: dict[str, Any] = {}

    async def start(self) -> PlantServer:
        server = Server(user_manager=self.users) if self.users else Server()
        await server.init()
        server.set_endpoint(self.url)
        server.set_security_policy(self.policies)
        await server.set_application_uri(SERVER_URI)
        if self.users:
            server.set_security_IDs(["Username"])
        if self.cert is not None:
            await server.load_certificate(str(self.cert))
            await server.load_private_key(str(self.key))
        if self.trusted_clients is not None:
            store_dir = Path(self.trusted_clients[0]).parent / f"trusted-{self.port}" if self.trusted_clients else None
            locations = []
            if store_dir is not None:
                store_dir.mkdir(exist_ok=True)
                for i, c in enumerate(self.trusted_clients):
                    (store_dir / f"client{i}.der").write_bytes(Path(c).read_bytes())
                locations.append(store_dir)
            store = TrustStore(locations, [])
            await store.load()
            server.set_certificate_validator(
                CertificateValidator(
                    CertificateValidatorOptions.TRUSTED | CertificateValidatorOptions.TIME_RANGE
                    | CertificateValidatorOptions.PEER_CLIENT,
                    store,
                )
            )
        idx = await server.register_namespace(NS_URI)
        folder = await server.nodes.objects.add_folder(idx, "R101")
        for name, (value, vtype) in PLANT_VARIABLES.items():
            self.nodes[name] = await folder.add_variable(ua.NodeId(name, idx), name, value, varianttype=vtype)
        for i in range(self.extra):
            name = f"X.{i}"
            self.nodes[name] = await folder.add_variable(ua.NodeId(name, idx), name, 0.0, varianttype=ua.VariantType.Double)
        for name, (low, high) in self.eu_ranges.items():
            # the EURange property of an AnalogItem (Part 8, 5.3.2): what a percent deadband is a percent of
            await self.nodes[name].add_property(
                ua.NodeId(f"{name}.EURange", idx), ua.QualifiedName("EURange", 0), ua.Range(Low=low, High=high),
                datatype=ua.NodeId(ua.ObjectIds.Range),
            )
        await server.start()
        self.server = server
        return self

    async def stop(self) -> None:
        if self.server is not None:
            await self.server.stop()
            self.server = None

    async def __aenter__(self) -> PlantServer:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def session_count(self) -> int:
        """Live client sessions on the server (activated ones and those kept for reconnects)."""
        assert self.server is not None
        return len(self.server.iserver._external_sessions)

    async def set(self, name: str, value: Any, *, status: int = ua.StatusCodes.Good,
                  source_ts: dt.datetime | None = None) -> None:
        node = self.nodes[name]
        vtype = PLANT_VARIABLES.get(name, (0.0, ua.VariantType.Double))[1]
        variant = ua.Variant(value, vtype) if not ua.StatusCode(status).is_bad() else ua.Variant()
        ts = source_ts or dt.datetime.now(dt.UTC)
        dv = ua.DataValue(variant, StatusCode=ua.StatusCode(status), SourceTimestamp=ts, ServerTimestamp=ts)
        await self.server.write_attribute_value(node.nodeid, dv)


def device(url: str, name: str = "plc", interval_s: float = 0.2, timeout_s: float = 2.0, **options: Any) -> DeviceSpec:
    return DeviceSpec(name=name, driver="opcua", url=url, interval_s=interval_s, timeout_s=timeout_s, options=options)


def tags(addresses: Iterable[str], device_name: str = "plc", first_index: int = 0, **options: Any) -> list[TagSpec]:
    return [
        TagSpec(index=first_index + i, name=a.split("=")[-1], device=device_name, address=a, options=options)
        for i, a in enumerate(addresses)
    ]


def plant_tags(names: Iterable[str] = tuple(PLANT_VARIABLES), **options: Any) -> list[TagSpec]:
    return tags([f"ns=2;s={n}" for n in names], **options)


class Collector:
    """Runs a driver's batches() in the background and keeps everything it yields."""

    def __init__(self, driver: OpcUaDriver):
        self.driver = driver
        self.batches: list[SampleBatch] = []
        self.changed = asyncio.Event()
        self._task: asyncio.Task | None = None

    async def __aenter__(self) -> Collector:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.driver.close()

    async def _run(self) -> None:
        async for batch in self.driver.batches():
            self.batches.append(batch)
            self.changed.set()

    async def wait_for(self, predicate, timeout: float = 20.0, what: str = "condition") -> None:
        """Wait until predicate(self) holds; fail with ``what`` if it never does."""
        async def loop():
            while not predicate(self):
                self.changed.clear()
                await self.changed.wait()
        try:
            await asyncio.wait_for(loop(), timeout)
        except TimeoutError:
            raise AssertionError(f"timed out waiting for {what}; last batches: {self.batches[-3:]}") from None

    def samples(self, tag_index: int) -> list[tuple[float, float, int]]:
        """(value, ts, quality) of every sample of one tag, in arrival order."""
        out = []
        for b in self.batches:
            sel = b.tag == tag_index
            out.extend(zip(b.value[sel].tolist(), b.ts[sel].tolist(), b.quality[sel].tolist(), strict=True))
        return out

    def last(self, tag_index: int) -> tuple[float, float, int] | None:
        s = self.samples(tag_index)
        return s[-1] if s else None

    def errors(self) -> list[str | None]:
        return [b.error for b in self.batches]

    def n_samples(self) -> int:
        return int(sum(len(b) for b in self.batches if b.error is None))

    def values_of(self, tag_index: int) -> np.ndarray:
        return np.array([v for v, _, q in self.samples(tag_index) if q != 3])


def run(coro, timeout: float = 90.0):
    """Run one test coroutine with an overall bound, so a hang fails instead of blocking the suite."""
    return asyncio.run(asyncio.wait_for(coro, timeout))
