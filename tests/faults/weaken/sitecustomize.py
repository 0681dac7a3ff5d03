"""Put on the agent's PYTHONPATH by tests/faults/test_power_cut.py to weaken the outbox's
durability on purpose (POWERCUT_SYNCHRONOUS=NORMAL): the control run that shows the power-cut
test catches a commit that is not synced."""

import os

if os.environ.get("POWERCUT_SYNCHRONOUS"):
    from agent import outbox

    _init = outbox.Outbox.__init__

    def _weakened(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        self.db.execute(f"PRAGMA synchronous={os.environ['POWERCUT_SYNCHRONOUS']}")

    outbox.Outbox.__init__ = _weakened
