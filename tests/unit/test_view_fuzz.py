"""The view's reducer never raises, whatever a store or a runtime hands it: fuzzed with
hypothesis over ``View.apply(Event.from_wire(x))``, on events of every kind (and unknown
ones) whose data has the kind's field names with values of any JSON type. And the schema
the door checks (``payloads.problem``) covers what the view needs: an event that passes it
is never one the view has to skip."""

from __future__ import annotations

import math
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conductloop_jupyter.core.events import KINDS, Event
from conductloop_jupyter.core.payloads import SCHEMAS, problem
from conductloop_jupyter.core.view import View

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats()
    | st.text(max_size=8)
    | st.sampled_from(["running", "done", "bogus", "approval", "question", "answered"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner),
    max_leaves=6,
)
FIELDS = sorted(
    {name for required, optional in SCHEMAS.values() for name in (*required, *optional)}
)


@st.composite
def wire_events(draw: st.DrawFn) -> dict[str, Any]:
    kind = draw(st.sampled_from([*KINDS, "agent.mood"]))
    names = draw(st.lists(st.sampled_from(FIELDS), max_size=8))
    data = {name: draw(JSON) for name in names}
    return {
        "v": 1,
        "seq": draw(st.integers(min_value=1, max_value=2**63 - 1)),
        "ts": draw(st.floats(min_value=0, max_value=2e9)),
        "runtime": "rt",
        "agent_id": draw(st.sampled_from(["a-1", "a-2", None, ""])),
        "kind": kind,
        "data": data,
    }


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(wire_events(), min_size=1, max_size=12))
def test_the_view_never_raises_and_skips_only_what_the_door_refuses(
    raws: list[dict[str, Any]],
) -> None:
    view = View()
    view.apply(Event(1, 1.0, "rt", "a-1", "agent.started", {"name": "a", "parent": None}))
    for raw in raws:
        try:
            event = Event.from_wire(raw)
        except ValueError:
            continue
        skipped = view.skipped
        view.apply(event)  # never raises
        if problem(event.kind, event.data) is None:
            assert view.skipped == skipped, event
    assert math.isfinite(view.total_cost_usd)
