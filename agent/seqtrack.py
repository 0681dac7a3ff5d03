"""What a platform keeps per plant about its alarm sequence, in bounded memory: the highest seq
of the current epoch, the ranges below it still missing, and the epochs before (the reference
receiver's bookkeeping, agent.receiver)."""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field

MAX_GAPS = 10_000  # missing seq ranges remembered per plant; past it the oldest are forgotten
MAX_EPOCHS = 16  # earlier sequence epochs remembered per plant (late messages of an old outbox)


@dataclass
class PlantTrack:
    """What the receiver knows about one plant's alarm stream, in bounded memory: the highest seq
    and the ranges below it still missing; every other seq up to the highest has arrived. A jump
    to seq 10**18 costs one range. At most MAX_GAPS ranges are kept: past that the oldest range is
    forgotten (``forgotten`` counts its seqs) and a seq in it arriving later reads as a duplicate."""

    highest: int = 0
    gaps: list[list[int]] = field(default_factory=list)  # [first, last] missing, ascending
    received: int = 0  # unique alarms taken
    duplicates: int = 0
    unnumbered: int = 0  # alarms sent from the gateway's memory, unnumbered (not in the sequence)
    forgotten: int = 0
    online: bool | None = None
    epoch: str | None = None  # of highest and gaps; None: no alarm yet
    earlier: dict[str, PlantTrack] = field(default_factory=dict)  # epochs before, oldest first

    def new_epoch(self, epoch: str) -> None:
        """The gateway numbers from 1 again under ``epoch``: the current sequence becomes an earlier one."""
        if self.epoch is not None:
            self.earlier[self.epoch] = PlantTrack(highest=self.highest, gaps=self.gaps)
            while len(self.earlier) > MAX_EPOCHS:
                del self.earlier[next(iter(self.earlier))]
        self.epoch, self.highest, self.gaps = epoch, 0, []

    def missing_earlier(self, limit: int = 20) -> dict[str, list[int]]:
        """The first missing seqs of each earlier epoch that has any."""
        return {e: t.missing(limit) for e, t in self.earlier.items() if t.gaps}

    def take(self, seq: int) -> str:
        """Book one seq: "new", "gap" (new, after missing ones), "late" (fills a gap) or "duplicate"."""
        if seq > self.highest:
            outcome = "gap" if seq > self.highest + 1 else "new"
            if outcome == "gap":
                self.gaps.append([self.highest + 1, seq - 1])
                if len(self.gaps) > MAX_GAPS:
                    first, last = self.gaps.pop(0)
                    self.forgotten += last - first + 1
            self.highest = seq
        else:
            i = bisect.bisect_right(self.gaps, seq, key=lambda g: g[0]) - 1
            if i < 0 or self.gaps[i][1] < seq:
                self.duplicates += 1
                return "duplicate"
            first, last = self.gaps[i]
            self.gaps[i:i + 1] = [g for g in ([first, seq - 1], [seq + 1, last]) if g[0] <= g[1]]
            outcome = "late"
        self.received += 1
        return outcome

    def missing(self, limit: int = 1000) -> list[int]:
        """The first ``limit`` missing seqs."""
        out: list[int] = []
        for first, last in self.gaps:
            out.extend(range(first, min(last, first + limit - len(out) - 1) + 1))
            if len(out) >= limit:
                break
        return out

    def missing_count(self) -> int:
        return sum(last - first + 1 for first, last in self.gaps)
