"""Monitored items: one CreateMonitoredItems request per tag, created ``batch_size`` at a time,
with the tag's deadband as a data-change filter where the server accepts one."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from asyncua import ua
from asyncua.common.subscription import Subscription

from drivers.opcua.config import TagOptions

# Status codes of a monitored item whose filter the server cannot apply (e.g. a percent
# deadband on a node without EURange): the item is then created again without a deadband, since
# every change is better than no value at all; the refusal is counted and shown in the data.
FILTER_REJECTED = {
    ua.StatusCodes.BadFilterNotAllowed,
    ua.StatusCodes.BadMonitoredItemFilterUnsupported,
    ua.StatusCodes.BadMonitoredItemFilterInvalid,
    ua.StatusCodes.BadDeadbandFilterInvalid,
}


def item_request(pos: int, tag: TagOptions, with_filter: bool = True) -> ua.MonitoredItemCreateRequest:
    """The request for one tag; its client handle is ``pos``, the tag's position in the device."""
    rv = ua.ReadValueId()
    rv.NodeId = tag.node_id
    rv.AttributeId = ua.AttributeIds.Value
    mp = ua.MonitoringParameters()
    mp.ClientHandle = pos
    mp.SamplingInterval = tag.sampling_interval_ms
    mp.QueueSize = tag.queue_size
    mp.DiscardOldest = True
    if with_filter and (tag.deadband_abs is not None or tag.deadband_percent is not None):
        f = ua.DataChangeFilter()
        f.Trigger = ua.DataChangeTrigger.StatusValue
        if tag.deadband_abs is not None:
            f.DeadbandType = ua.DeadbandType.Absolute
            f.DeadbandValue = tag.deadband_abs
        else:
            f.DeadbandType = ua.DeadbandType.Percent
            f.DeadbandValue = tag.deadband_percent
        mp.Filter = f
    req = ua.MonitoredItemCreateRequest()
    req.ItemToMonitor = rv
    req.MonitoringMode = ua.MonitoringMode.Reporting
    req.RequestedParameters = mp
    return req


async def create_items(sub: Subscription, tags: Sequence[TagOptions], batch_size: int,
                       refused: Callable[[int, ua.StatusCode, bool], None],
                       filter_refused: Callable[[int, ua.StatusCode], None]) -> None:
    """Create one monitored item per tag. ``filter_refused(pos, status)`` is called for each item
    whose deadband the server refuses: that item is then created once more without a deadband.
    ``refused(pos, status, retried)`` is called for each item the server refuses (``retried``:
    the one created again without its deadband)."""
    requests = [item_request(i, t) for i, t in enumerate(tags)]
    for start in range(0, len(requests), batch_size):
        chunk = requests[start:start + batch_size]
        results = await sub.create_monitored_items(chunk)
        retry = []
        for req, res in zip(chunk, results, strict=True):
            if isinstance(res, ua.StatusCode):
                pos = req.RequestedParameters.ClientHandle
                if res.value in FILTER_REJECTED:
                    filter_refused(pos, res)
                    retry.append(item_request(pos, tags[pos], with_filter=False))
                else:
                    refused(pos, res, False)
        if retry:
            for req, res in zip(retry, await sub.create_monitored_items(retry), strict=True):
                if isinstance(res, ua.StatusCode):
                    refused(req.RequestedParameters.ClientHandle, res, True)
