"""The live agent's composition: every piece of the shell keeps its state on the instance."""

from __future__ import annotations

import inspect

import pytest

from agent.housekeeping import Housekeeping
from agent.operators import Operators
from agent.reminders import Reminders
from agent.runtime import Agent
from agent.telemetry import Telemetry


@pytest.mark.parametrize("cls", [Agent, Operators, Telemetry, Housekeeping, Reminders])
def test_no_state_is_shared_between_instances(cls):
    state = {name for name, value in vars(cls).items()
             if not name.startswith("__") and not callable(value) and not isinstance(value, property)
             and not inspect.isdatadescriptor(value)}
    assert not state, f"{cls.__name__} keeps {sorted(state)} on the class"
