"""The driver contract's shared parts: one backoff for every reconnect loop, drivers found by URL
scheme, and the hooks through which a driver brings its own probe, commands and simulator."""

from __future__ import annotations

from drivers.base import DeviceSpec, PollingDriver, backoff_delay


def test_backoff_doubles_from_the_initial_delay_up_to_the_bound():
    top = [backoff_delay(n, 0.5, 30.0, rng=lambda: 1.0) for n in range(1, 10)]
    assert top == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    # the first retry waits the initial delay at most, never less than half of it
    assert backoff_delay(1, 0.5, 30.0, rng=lambda: 0.0) == 0.25
    assert backoff_delay(0, 0.5, 30.0, rng=lambda: 0.0) == 0.25


def test_backoff_jitter_stays_between_half_and_the_full_delay():
    delays = [backoff_delay(4, 1.0, 30.0) for _ in range(500)]
    assert all(4.0 <= d < 8.0 for d in delays)
    assert max(delays) - min(delays) > 1.0  # the jitter really spreads the retries


def test_polling_driver_retries_on_the_shared_backoff():
    class Slow(PollingDriver):
        name = "slow"
        backoff_initial_s, backoff_max_s = 2.0, 5.0

        async def connect(self): ...

        async def read(self): ...

    drv = Slow(DeviceSpec("d", "slow", "x://"), [])
    for n in (1, 2, 3, 7):
        lo, hi = (backoff_delay(n, 2.0, 5.0, rng=lambda v=v: v) for v in (0.0, 1.0))
        assert all(lo <= drv.reconnect_delay(n) < hi for _ in range(50))
