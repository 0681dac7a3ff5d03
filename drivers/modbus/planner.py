"""Read-request planning: cover every tag of a device with the fewest Modbus read requests.

Model. In each area a tag occupies the interval [address, address + width). A request is a range
[start, start + count) that must contain each of its tags whole, may not exceed the area's
limit (125 registers / 2000 bits, or lower per device), and may not span a *hole* — a run of
addresses no tag of the device uses — longer than ``max_gap`` (holes are where a PLC most often
answers "illegal data address", and reading them only costs time).

Holes longer than ``max_gap`` cut the area into independent clusters. Inside a cluster the
greedy rule "start at the lowest uncovered start s, take every uncovered tag ending by
s + limit" is optimal: any request covering that lowest tag lies within [s', s' + limit) with
s' <= s, so it covers a subset of what the greedy request covers, and covering fewer tags never
makes the rest cheaper. Induction on the number of requests gives minimality (the tests also
check it against brute force). Unlike a one-pass merge it skips a tag that would overflow the
request and still takes later, shorter tags that fit.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from drivers.modbus.address import AREA_FC, BIT_AREAS, MAX_BITS, MAX_REGISTERS, Point

AREA_ORDER = ("co", "di", "ir", "hr")


@dataclass(frozen=True)
class Limits:
    max_registers: int = MAX_REGISTERS
    max_bits: int = MAX_BITS
    max_gap: int = 10  # registers
    max_bit_gap: int = 128  # bits (16 bytes on the wire)

    def size(self, area: str) -> int:
        return self.max_bits if area in BIT_AREAS else self.max_registers

    def gap(self, area: str) -> int:
        return self.max_bit_gap if area in BIT_AREAS else self.max_gap


@dataclass(frozen=True)
class Request:
    """One read: ``members`` are indices into the device's point list."""

    area: str
    start: int
    count: int
    members: tuple[int, ...]

    @property
    def fc(self) -> int:
        return AREA_FC[self.area]

    @property
    def end(self) -> int:
        return self.start + self.count

    def describe(self, tags: int | None = None) -> str:
        unit = ("bit" if self.area in BIT_AREAS else "reg") + ("s" if self.count != 1 else "")
        n = len(self.members) if tags is None else tags
        return f"{self.area} {self.start}-{self.end - 1} ({self.count} {unit}, {n} tag{'s' if n != 1 else ''})"


def _cover(area: str, items: list[tuple[int, int, int]], size: int) -> list[Request]:
    """Greedy optimal cover of one cluster; ``items`` are (start, end, member) sorted by start."""
    out: list[Request] = []
    pending = items
    while pending:
        first = pending[0][0]
        limit = first + size
        taken: list[int] = []
        rest: list[tuple[int, int, int]] = []
        last = first
        for i, item in enumerate(pending):
            start, end, member = item
            if start >= limit:  # sorted by start: nothing further can fit
                rest.extend(pending[i:])
                break
            if end <= limit:
                taken.append(member)
                last = max(last, end)
            else:
                rest.append(item)
        out.append(Request(area, first, last - first, tuple(taken)))
        pending = rest
    return out


def plan_points(points: Sequence[Point], limits: Limits = Limits()) -> list[Request]:
    """The minimum set of read requests covering ``points`` (indices refer to ``points``)."""
    by_area: dict[str, list[tuple[int, int, int]]] = {}
    for i, p in enumerate(points):
        by_area.setdefault(p.area, []).append((p.address, p.end, i))
    requests: list[Request] = []
    for area in AREA_ORDER:
        items = sorted(by_area.get(area, ()))
        if not items:
            continue
        size, gap = limits.size(area), limits.gap(area)
        cluster = [items[0]]
        reach = items[0][1]
        for item in items[1:]:
            if item[0] - reach > gap:
                requests.extend(_cover(area, cluster, size))
                cluster = []
            cluster.append(item)
            reach = max(reach, item[1])
        requests.extend(_cover(area, cluster, size))
    return requests


def split(request: Request, points: Sequence[Point]) -> tuple[Request, Request] | None:
    """Split a request whose read was refused into two covering the same tags: at its widest
    internal hole if it has one (the likely unmapped range), else in the middle. None when the
    request cannot be split (all its tags overlap one address range)."""
    items = sorted((points[m].address, points[m].end, m) for m in request.members)
    cuts = []  # (hole size, index of first item of the right part)
    reach = items[0][1]
    for i in range(1, len(items)):
        if items[i][0] >= reach:
            cuts.append((items[i][0] - reach, -abs(len(items) - 2 * i), i))
        reach = max(reach, items[i][1])
    if not cuts:
        return None
    _, _, at = max(cuts)
    left, right = items[:at], items[at:]

    def make(part: list[tuple[int, int, int]]) -> Request:
        start = part[0][0]
        return Request(request.area, start, max(e for _, e, _ in part) - start, tuple(m for _, _, m in part))

    return make(left), make(right)
