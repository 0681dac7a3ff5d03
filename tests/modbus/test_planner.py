"""The request planner: every tag covered, every request within the limits, and the fewest
requests possible (hand-made cases with a known optimum, brute force, and a greedy bound)."""

from __future__ import annotations

import itertools

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.modbus.address import WIDTH, Point, make_point
from drivers.modbus.planner import Limits, Request, plan_points, split


def pts(*specs: str) -> list[Point]:
    """'hr:100/float32' -> Point."""
    out = []
    for s in specs:
        address, _, type_ = s.partition("/")
        point, problems = make_point(address, type_ or "uint16", "ABCD")
        assert not problems, problems
        out.append(point)
    return out


def spans(requests: list[Request]) -> list[tuple[str, int, int]]:
    return [(r.area, r.start, r.count) for r in requests]


def test_adjacent_registers_make_one_request():
    reqs = plan_points(pts(*(f"hr:{100 + 2 * i}/float32" for i in range(32))))
    assert spans(reqs) == [("hr", 100, 64)]


def test_small_holes_are_read_through_large_ones_are_not():
    points = pts("hr:0", "hr:11", "hr:30")  # holes of 10 and 18 registers
    assert spans(plan_points(points, Limits(max_gap=10))) == [("hr", 0, 12), ("hr", 30, 1)]
    assert spans(plan_points(points, Limits(max_gap=9))) == [("hr", 0, 1), ("hr", 11, 1), ("hr", 30, 1)]
    assert spans(plan_points(points, Limits(max_gap=18))) == [("hr", 0, 31)]


def test_never_more_than_125_registers_or_2000_bits():
    reqs = plan_points(pts(*(f"hr:{i}" for i in range(300))))
    assert spans(reqs) == [("hr", 0, 125), ("hr", 125, 125), ("hr", 250, 50)]
    bits = plan_points(pts(*(f"co:{i}/bool" for i in range(4500))))
    assert spans(bits) == [("co", 0, 2000), ("co", 2000, 2000), ("co", 4000, 500)]


def test_configured_lower_limits_are_kept():
    reqs = plan_points(pts(*(f"ir:{i}" for i in range(100))), Limits(max_registers=32))
    assert [r.count for r in reqs] == [32, 32, 32, 4]
    bits = plan_points(pts(*(f"di:{i}/bool" for i in range(40))), Limits(max_bits=16))
    assert [r.count for r in bits] == [16, 16, 8]


def test_a_value_is_never_split_across_requests():
    # a float64 at 122 would straddle 125: it starts the next request instead
    reqs = plan_points(pts(*(f"hr:{i}" for i in range(122)), "hr:122/float64"))
    assert spans(reqs) == [("hr", 0, 122), ("hr", 122, 4)]


def test_tags_inside_a_straddling_value_ride_along():
    # the float64 at 123 does not fit under 125; the uint16 at 124 (inside it) does
    points = pts(*(f"hr:{i}" for i in range(123)), "hr:123/float64", "hr:124", "hr:127")
    reqs = plan_points(points)
    assert spans(reqs) == [("hr", 0, 125), ("hr", 123, 5)]
    assert 124 in {points[m].address for m in reqs[0].members}


def test_areas_are_planned_separately_and_bits_of_a_register_share_it():
    points = pts("co:0/bool", "di:0/bool", "ir:0", "hr:0", "hr:0.3/bool", "hr:0.4/bool")
    reqs = plan_points(points)
    assert spans(reqs) == [("co", 0, 1), ("di", 0, 1), ("ir", 0, 1), ("hr", 0, 1)]
    assert sorted(reqs[-1].members) == [3, 4, 5]


def test_split_cuts_at_the_widest_hole_else_in_the_middle():
    points = pts("hr:0", "hr:1", "hr:5", "hr:6", "hr:7")
    (req,) = plan_points(points)
    left, right = split(req, points)
    assert (left.start, left.count, right.start, right.count) == (0, 2, 5, 3)
    points = pts(*(f"hr:{i}" for i in range(8)))
    (req,) = plan_points(points)
    left, right = split(req, points)
    assert (left.count, right.count) == (4, 4)
    assert split(Request("hr", 0, 2, (0, 1)), pts("hr:0/float32", "hr:0/int32")) is None


# --- properties on random tag maps --------------------------------------------------------

@st.composite
def tag_maps(draw, max_addr=600, max_tags=60):
    n = draw(st.integers(1, max_tags))
    out = []
    for _ in range(n):
        area = draw(st.sampled_from(["co", "di", "ir", "hr"]))
        type_ = "bool" if area in ("co", "di") else draw(st.sampled_from(sorted(WIDTH)))
        addr = draw(st.integers(0, max_addr))
        bit = draw(st.integers(-1, 15)) if type_ == "bool" and area in ("ir", "hr") else -1
        text = f"{area}:{addr}" + (f".{bit}" if bit >= 0 else "")
        point, problems = make_point(text, type_, "ABCD")
        assert not problems
        out.append(point)
    return out


limits_st = st.builds(Limits, max_registers=st.integers(4, 125), max_bits=st.integers(1, 2000),
                      max_gap=st.integers(0, 20), max_bit_gap=st.integers(0, 200))


def greedy_merge(points: list[Point], limits: Limits) -> int:
    """The usual one-pass optimiser (sorted by address, extend while within limit and gap)."""
    count = 0
    for area in ("co", "di", "ir", "hr"):
        items = sorted((p.address, p.end) for p in points if p.area == area)
        start = reach = None
        for s, e in items:
            if start is None or s - reach > limits.gap(area) or max(reach, e) - start > limits.size(area):
                count += 1
                start, reach = s, e
            else:
                reach = max(reach, e)
    return count


def holes_within(req: Request, points: list[Point], gap: int) -> bool:
    """No run of addresses used by no tag of the device (in the area) longer than gap inside req."""
    used = set()
    for p in points:
        if p.area == req.area:
            used.update(range(p.address, p.end))
    run = 0
    for a in range(req.start, req.end):
        run = 0 if a in used else run + 1
        if run > gap:
            return False
    return True


@settings(max_examples=300, deadline=None)
@given(tag_maps(), limits_st)
def test_every_tag_covered_within_limits_and_never_worse_than_greedy(points, limits):
    reqs = plan_points(points, limits)
    covered = sorted(m for r in reqs for m in r.members)
    assert covered == list(range(len(points)))  # every tag exactly once
    for r in reqs:
        assert 1 <= r.count <= limits.size(r.area)
        for m in r.members:
            p = points[m]
            assert p.area == r.area and r.start <= p.address and p.end <= r.end
        assert holes_within(r, points, limits.gap(r.area))
    assert len(reqs) <= greedy_merge(points, limits)


def brute_force_minimum(points: list[Point], limits: Limits) -> int:
    """Smallest k such that k windows (each starting at a tag's address) cover all tags."""
    total = 0
    for area in ("co", "di", "ir", "hr"):
        area_pts = [p for p in points if p.area == area]
        if not area_pts:
            continue
        size, gap = limits.size(area), limits.gap(area)
        windows = set()
        for s in {p.address for p in area_pts}:
            for e in {p.end for p in area_pts}:
                if not 0 < e - s <= size:
                    continue
                sel = frozenset(i for i, p in enumerate(area_pts) if s <= p.address and p.end <= e)
                if sel and holes_within(Request(area, s, e - s, ()), area_pts, gap):
                    windows.add(sel)
        need = frozenset(range(len(area_pts)))
        for k in range(1, len(area_pts) + 1):
            if any(frozenset().union(*combo) == need for combo in itertools.combinations(windows, k)):
                total += k
                break
    return total


@settings(max_examples=150, deadline=None)
@given(tag_maps(max_addr=40, max_tags=7),
       st.builds(Limits, max_registers=st.integers(4, 12), max_bits=st.integers(1, 12),
                 max_gap=st.integers(0, 6), max_bit_gap=st.integers(0, 6)))
def test_plan_is_minimal_against_brute_force(points, limits):
    assert len(plan_points(points, limits)) == brute_force_minimum(points, limits)
