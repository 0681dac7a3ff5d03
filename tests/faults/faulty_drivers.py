"""Drivers that misbehave on purpose, for the supervision tests. Registered only by the tests
(an entry point in a dist-info they write into the child's PYTHONPATH), never shipped.

``crashy`` yields a few good batches, then raises out of ``batches()`` (a bug in a driver, an
exception its library did not document); every later start of it reads normally.
``blocking`` yields a few batches, then blocks the event loop with a synchronous sleep (a
driver calling blocking I/O), marking the start and end of the block on NOTIFY_SOCKET.
"""

from __future__ import annotations

import asyncio
import os
import socket
import time

from drivers.base import Driver, SampleBatch

GOOD_BEFORE_FAULT = 3


class Crashy(Driver):
    name = "crashy"
    schemes = ("crashy",)
    starts = 0  # in this process

    async def batches(self):
        Crashy.starts += 1
        n = 0
        while True:
            n += 1
            if Crashy.starts == 1 and n > GOOD_BEFORE_FAULT:
                raise RuntimeError("driver bug: index out of range in the read plan")
            yield SampleBatch.build(self.device.name, self.tag_indices, [1.0] * len(self.tags), time.time(), 0)
            await asyncio.sleep(self.device.interval_s)


def mark(text: str) -> None:
    """A line on the test's NOTIFY_SOCKET, in order with the agent's own datagrams."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as s:
        s.sendto(f"X-TEST={text}".encode(), os.environ["NOTIFY_SOCKET"])


class Blocking(Driver):
    name = "blocking"
    schemes = ("blocking",)
    device_keys = frozenset({"block_s"})

    async def batches(self):
        n = 0
        block_s = float(self.device.options.get("block_s", 3.0))
        while True:
            n += 1
            if n == GOOD_BEFORE_FAULT + 1:
                mark("block-start")
                time.sleep(block_s)  # noqa: ASYNC251 - the fault under test: the loop blocked
                mark("block-end")
            yield SampleBatch.build(self.device.name, self.tag_indices, [1.0] * len(self.tags), time.time(), 0)
            await asyncio.sleep(self.device.interval_s)
