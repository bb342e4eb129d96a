"""A view's state, the part of the hub's saved view that holds every agent and request:
it round-trips through JSON field for field, is a copy, and is refused when it does not fit.
"""

from __future__ import annotations

import json

import pytest

from conductloop_jupyter.core.states import AgentState
from conductloop_jupyter.core.view import STATE_VERSION, View
from tests.hub._snapshot_support import assert_same_view, story


def test_a_view_state_round_trips_through_json_equal_field_for_field() -> None:
    view = View()
    for event in story("rt-1", 1, 95) + story("rt-2", 1, 47):
        view.apply(event)
    assert view.pending()
    assert view.live()
    assert any(a.stalled for a in view.agents.values())

    restored = View.from_state(json.loads(json.dumps(view.state())))

    assert_same_view(restored, view)
    assert all(isinstance(a.state, AgentState) for a in restored.agents.values())
    assert all(isinstance(r.choices, tuple) for r in restored.requests.values() if r.choices)
    for event in story("rt-1", 96, 140):  # and both go on alike
        view.apply(event)
        restored.apply(event)
    assert_same_view(restored, view)


def test_a_view_state_is_a_copy_the_view_does_not_change_later() -> None:
    view = View()
    for event in story("rt-1", 1, 13):
        view.apply(event)
    state = view.state()
    before = json.dumps(state)
    for event in story("rt-1", 14, 40):
        view.apply(event)
    assert json.dumps(state) == before


@pytest.mark.parametrize(
    "change",
    ["another version", "another field", "a missing key", "a short agent", "an unknown open"],
)
def test_a_view_state_that_does_not_fit_is_refused(change: str) -> None:
    view = View()
    for event in story("rt-1", 1, 30):
        view.apply(event)
    state = view.state()
    if change == "another version":
        state["version"] = STATE_VERSION + 1
    elif change == "another field":
        state["agent_fields"].append("mood")
    elif change == "a missing key":
        del state["requests"]
    elif change == "a short agent":
        state["agents"][0].pop()
    else:
        state["open"].append("no-such-request")
    with pytest.raises(ValueError, match="view state"):
        View.from_state(state)
