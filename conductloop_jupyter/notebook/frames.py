"""pandas frames from the live view and the event log: ``agents()``, ``events()``, ``spend()``.

Each function imports pandas (and numpy) itself, on its first call: a script that never
asks for a frame does not pay the 0.2 s that importing pandas costs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Literal

from ..core.errors import UsageError
from ..core.events import Event
from ..core.view import AgentView

if TYPE_CHECKING:
    import pandas as pd

    from ..hub.store import EventStore

AGENT_COLUMNS = [
    "agent_id",
    "name",
    "state",
    "activity",
    "stalled",
    "cost_usd",
    "input_tokens",
    "output_tokens",
    "parent",
    "model",
    "tool",
    "request_id",
    "started",
    "ended",
    "elapsed_s",
    "unpriced_calls",
    "runtime",
    "error",
]
EVENT_COLUMNS = ["seq", "ts", "runtime", "agent_id", "kind", "data"]
_SPEND = ["cost_usd", "input_tokens", "output_tokens", "calls", "unpriced_calls"]


def _times(frame: pd.DataFrame, *columns: str) -> None:
    import pandas as pd

    for column in columns:
        frame[column] = pd.to_datetime(frame[column], unit="s", utc=True)


def agents_frame(rows: Iterable[dict[str, Any]], now: float) -> pd.DataFrame:
    """One row per agent (``AgentView.row()`` dicts), in the order they started."""
    import pandas as pd

    rows = [
        {**row, "elapsed_s": (row["ended"] if row["ended"] is not None else now) - row["started"]}
        for row in rows
    ]
    frame = pd.DataFrame(rows, columns=AGENT_COLUMNS)
    _times(frame, "started", "ended")
    return frame


def events_frame(events: Iterable[Event], dropped: int = 0) -> pd.DataFrame:
    """One row per event; ``frame.attrs["dropped"]`` counts events the bounded log let go."""
    import pandas as pd

    frame = pd.DataFrame(
        [(e.seq, e.ts, e.runtime, e.agent_id, e.kind, e.data) for e in events],
        columns=EVENT_COLUMNS,
    )
    _times(frame, "ts")
    frame.attrs["dropped"] = dropped
    return frame


def events_frame_from_store(store: EventStore, after: int = 0) -> pd.DataFrame:
    """Every event in a hub's store with store id > ``after``: ``id`` and the columns of
    ``events_frame``, with ``data`` as dicts too. Blocking (run it off an event loop).

    Built column by column from one pass over the table (``EventStore.columns``), never
    through a tuple or an ``Event`` per row: a million events take ~2.2 s, 1.4 times what
    ``pd.read_sql`` takes with ``data`` left as JSON text, and 2.5 times less than
    ``read_sql`` then ``json.loads`` per row (``benchmarks/store.py``).

    >>> events_frame_from_store(hub.store, after=last_seen)
    """
    import numpy as np
    import pandas as pd

    columns = store.columns(after)
    data = np.empty(len(columns.data), dtype=object)  # as it is: pandas would scan the dicts
    data[:] = columns.data
    frame = pd.DataFrame(
        {
            "id": np.array(columns.ids, dtype=np.int64),
            "seq": np.array(columns.seqs, dtype=np.int64),
            "ts": pd.to_datetime(np.array(columns.ts, dtype=np.float64), unit="s", utc=True),
            "runtime": columns.runtimes,
            "agent_id": columns.agent_ids,
            "kind": columns.kinds,
            "data": data,
        }
    )
    frame.attrs["dropped"] = 0
    return frame


def spend_frame(
    agents: Iterable[AgentView], by: Literal["agent", "model"] = "agent"
) -> pd.DataFrame:
    """Cost and tokens per agent or per model, most expensive first.

    ``unpriced_calls`` counts calls whose model genai-prices did not know: their cost is
    not in ``cost_usd``.
    """
    import pandas as pd

    if by not in ("agent", "model"):
        raise UsageError(f"spend(by=...) takes 'agent' or 'model', not {by!r}")
    rows: list[dict[str, Any]] = []
    if by == "agent":
        for agent in agents:
            calls = sum(int(m[3]) for m in agent.by_model.values())
            rows.append(
                {
                    "agent_id": agent.agent_id,
                    "name": agent.name,
                    "cost_usd": agent.cost_usd,
                    "input_tokens": agent.input_tokens,
                    "output_tokens": agent.output_tokens,
                    "calls": calls,
                    "unpriced_calls": agent.unpriced_calls,
                }
            )
        columns = ["agent_id", "name", *_SPEND]
    else:
        totals: dict[str, list[float]] = {}
        for agent in agents:
            for model, figures in agent.by_model.items():
                into = totals.setdefault(model, [0.0, 0.0, 0.0, 0.0, 0.0])
                for i, value in enumerate(figures):
                    into[i] += value
        for model, (cost, tokens_in, tokens_out, n_calls, unpriced) in totals.items():
            rows.append(
                {
                    "model": model,
                    "cost_usd": cost,
                    "input_tokens": int(tokens_in),
                    "output_tokens": int(tokens_out),
                    "calls": int(n_calls),
                    "unpriced_calls": int(unpriced),
                }
            )
        columns = ["model", *_SPEND]
    frame = pd.DataFrame(rows, columns=columns)
    return frame.sort_values("cost_usd", ascending=False, kind="stable").reset_index(drop=True)
