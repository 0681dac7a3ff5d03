"""The simulated plants of ``plantwatch demo --plant NAME``: for each template, every point's
value over one cycle, playing the faults the template's standard is about. Each point follows a
track of straight segments (a step is a segment of no length); the cycle repeats. Events are far
enough apart that the alarms they raise reach the platform in the order of the story whatever
the phase of the polls: an alarm with on-delay d on a device polled every p seconds is raised
between d and d + 2p after its value crosses the limit (the first sample over it, then the first
sample d later), and a level must be raised before the value reaches the next one.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

Knots = tuple[tuple[float, float], ...]


def ramp(v0: float, *moves: tuple[float, float, float]) -> Knots:
    """A track starting at ``v0``: each move ``(t0, t1, v)`` goes in a straight line from the value
    it has at ``t0`` to ``v`` at ``t1`` (``t0 == t1``: a step)."""
    knots = [(0.0, v0)]
    v = v0
    for t0, t1, target in moves:
        knots += [(t0, v), (t1, target)]
        v = target
    return tuple(knots)


def at(knots: Knots, t: float) -> float:
    """The track's value at ``t`` seconds into the cycle."""
    prev_t, prev_v = knots[0]
    for kt, kv in knots:
        if kt > t:
            return prev_v + (kv - prev_v) * (t - prev_t) / (kt - prev_t)
        prev_t, prev_v = kt, kv
    return prev_v


@dataclass(frozen=True)
class Scenario:
    """One plant's cycle: ``tracks`` (tag name -> knots) and the ``story`` told as it plays."""

    cycle_s: float
    tracks: Mapping[str, Knots]
    story: tuple[tuple[float, str], ...]


class Player:
    """A scenario playing: the values of every point now, and the lines of the story whose time
    has come since the last call. The cycle starts at the first read of a device (a polled
    device's simulator asks at each request), so the agent's own start-up takes none of the
    story. One player serves all the plant's devices (each simulator picks its own tags)."""

    def __init__(self, scenario: Scenario):
        self.scenario = scenario
        self.t0: float | None = None
        self.told = -1

    def values(self, now: float) -> dict[str, float]:
        if self.t0 is None:
            self.t0 = now
        t = (now - self.t0) % self.scenario.cycle_s
        return {name: at(knots, t) for name, knots in self.scenario.tracks.items()}

    def narrate(self, now: float) -> list[str]:
        """The story's lines due since the last call (the cycle restarts the story)."""
        if self.t0 is None:
            return []
        cycle, t = divmod(now - self.t0, self.scenario.cycle_s)
        lines = []
        for i, (when, text) in enumerate(self.scenario.story):
            key = int(cycle) * len(self.scenario.story) + i
            if when <= t and key > self.told:
                lines.append(f"t={when:4.1f} s  {text}")
                self.told = key
        return lines


# declarative: the casting line's tracks and story, in time order
def _al_casting() -> Scenario:
    end = 18.0  # everything returns to normal
    return Scenario(cycle_s=23.5, tracks={
        "CAST.RUN": ramp(0, (1.0, 1.0, 1), (16.3, 16.3, 0)),
        "CW.PI01": ramp(0.45, (2.9, 3.0, 0.22), (5.0, 5.1, 0.12), (end, end + 0.5, 0.45)),
        "CW.FI01": ramp(220.0, (4.0, 4.1, 165.0), (end, end + 0.5, 220.0)),
        "CW.FI02": ramp(218.0, (4.0, 4.1, 163.0), (5.9, 6.0, 150.0), (end, end + 0.5, 218.0)),
        "CW.TI01": ramp(24.0),
        "CW.TI02": ramp(32.0, (13.8, 13.9, 41.0), (end, end + 1.0, 32.0)),
        "LT.LI01": ramp(120.0),
        "LT.LI02": ramp(100.0, (10.9, 11.0, 30.0), (end, end + 0.5, 100.0)),
        "XV01.CMD": ramp(0, (6.5, 6.5, 1), (end, end, 0)),
        "XV01.ZSC": ramp(0),  # stuck open: the cut-off valve does not follow its command
        "LT.BRK": ramp(0, (10.0, 10.0, 1), (end, end, 0)),
        "XV02.CMD": ramp(0, (12.5, 12.5, 1), (end, end, 0)),
        "XV02.ZSO": ramp(0, (12.8, 12.8, 1), (end + 0.3, end + 0.3, 0)),
        "FCE.TILT": ramp(0, (13.8, 13.8, 1), (end, end, 0)),
        "ILK.FAULT": ramp(0, (16.3, 16.3, 1), (end + 1.0, end + 1.0, 0)),
        "EW.PI01": ramp(0.55),
        "EW.XV03": ramp(0),
        "CAST.SPEED": ramp(0, (1.0, 2.0, 65.0), (16.3, 17.0, 0)),
        "PIT.LI01": ramp(6.5),
    }, story=(
        (1.0, "casting starts (铸造开始)"),
        (2.9, "mould cooling water inlet pressure falls to 0.22 MPa"),
        (4.0, "inlet flow falls to 165 m³/h"),
        (5.0, "inlet pressure falls to 0.12 MPa"),
        (5.9, "outlet flow falls further: 15 m³/h goes in and does not come out"),
        (6.5, "the interlock commands the quick cut-off valve closed; it stays open"),
        (10.0, "the runner break actuates"),
        (10.9, "the runner at the mould-table inlet drains"),
        (12.5, "the emergency drain valve is commanded open, and opens"),
        (13.8, "the tilting furnace tilts back; the outlet water heats up"),
        (16.3, "the PLC flags the failed valve: casting forbidden"),
        (end, "cooling restored, valves reset"),
    ))


# declarative: the collectors' tracks and story, in time order
def _dust_collector() -> Scenario:
    end = 14.5
    return Scenario(cycle_s=18.0, tracks={
        "DC1.TI01": ramp(45.0, (2.5, 2.6, 63.0), (4.5, 4.6, 73.0), (end, end + 1.0, 45.0)),
        "DC1.TI02": ramp(38.0),
        "DC1.PDI01": ramp(900.0),
        "DC1.AIRLOCK": ramp(0, (9.5, 9.5, 1), (end, end, 0)),
        "DC1.SPARK": ramp(0, (6.5, 6.5, 1), (7.5, 7.5, 0)),
        "DC1.VENT": ramp(0, (7.5, 7.5, 1), (end, end, 0)),
        "DC1.ISO": ramp(0, (8.5, 8.5, 1), (end, end, 0)),
        "DC1.LS01": ramp(0),
        "WC1.LI01": ramp(520.0),
        "WC1.FI01": ramp(14.0, (11.5, 11.6, 6.0), (end, end + 0.5, 14.0)),
    }, story=(
        (2.5, "the dry collector's hopper heats up (smouldering dust)"),
        (6.5, "a spark passes the detector"),
        (7.5, "the explosion vent bursts"),
        (8.5, "the isolation valve closes"),
        (9.5, "the airlock discharge valve fails"),
        (11.5, "the wet collector's circulation flow falls"),
        (end, "back to normal"),
    ))


# declarative: the gas area's tracks and story, in time order
def _steel_gas() -> Scenario:
    end = 14.5
    return Scenario(cycle_s=18.0, tracks={
        "GD101.CO": ramp(3.0, (2.5, 4.5, 40.0), (5.5, 7.5, 200.0), (end, end + 1.0, 3.0)),
        "GD102.CO": ramp(2.0, (10.0, 11.0, 30.0), (end, end + 1.0, 2.0)),
        "GD103.CO": ramp(1.0),
        "GD201.LEL": ramp(0.0),
        "GAS.FAULT": ramp(0),
    }, story=(
        (2.5, "a gas valve group leaks: CO rises at detector 1"),
        (5.5, "the leak grows"),
        (10.0, "the gas drifts to the gas holder: CO rises at detector 2"),
        (end, "the leak is stopped"),
    ))


# declarative: the tank's and the reactor's tracks and story, in time order
def _chemical_major_hazard() -> Scenario:
    end = 19.5
    return Scenario(cycle_s=24.0, tracks={
        "GD102.H2S": ramp(0.5, (2.0, 2.5, 9.0), (3.5, 4.0, 18.0), (end, end + 1.0, 0.5)),
        "GD101.LEL": ramp(0.0),
        "R101.FI01": ramp(25.0, (5.0, 5.1, 11.0), (6.5, 6.5, 9.5), (end, end + 0.5, 25.0)),
        "R101.TI01": ramp(60.0, (5.0, 8.0, 78.0), (12.5, 13.0, 88.0), (end, end + 2.0, 60.0)),
        "R101.PI01": ramp(0.30),
        "R101.LI01": ramp(55.0),
        "R101.AGITATOR": ramp(1, (15.5, 15.5, 0), (end, end, 1)),
        "R101.ESD": ramp(0, (15.5, 15.5, 1), (end, end, 0)),
        "XV101.CMD": ramp(0, (15.5, 15.5, 1), (end, end, 0)),
        "XV101.ZSC": ramp(0, (16.0, 16.0, 1), (end, end, 0)),
        "T101.LI01": ramp(60.0, (16.5, 17.0, 87.0), (end, end + 1.0, 60.0)),
        "T101.TI01": ramp(25.0),
        "T101.PI01": ramp(3.0),
        "T101.LSHH": ramp(0),
    }, story=(
        (2.0, "H₂S leaks at a flange: detector 2 rises through 一级 (7 ppm)"),
        (3.5, "…and through 二级 (14 ppm)"),
        (5.0, "the reactor's cooling water falls; its temperature starts to climb"),
        (6.5, "cooling water below 10 m³/h with the agitator running"),
        (12.5, "the reaction runs away"),
        (15.5, "emergency shutdown: agitator off, the feed cut-off valve closes"),
        (16.5, "the feed goes to the tank: its level rises"),
        (end, "back to normal"),
    ))


#: template name -> its scenario
SCENARIOS = {
    "al-casting": _al_casting,
    "dust-collector": _dust_collector,
    "steel-gas": _steel_gas,
    "chemical-major-hazard": _chemical_major_hazard,
}
