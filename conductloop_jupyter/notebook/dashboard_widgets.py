"""What a dashboard is made of, and what each part costs in front-end messages.

Creating a widget sends one ``comm_open`` per widget, and ipywidgets gives every new widget
a ``Layout`` and a style of its own: three messages for one button. ``Kit`` makes widgets
that share one layout and one style per kind, so each costs exactly one message, which
``card_cost`` counts before a card is made and ``MessageBudget`` keeps under the rate.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import ipywidgets as widgets
from ipywidgets.widgets.widget_description import DescriptionStyle
from ipywidgets.widgets.widget_string import HTMLStyle, TextStyle

from ..core.view import AgentView, Request
from . import dashboard_html as text

MAX_CHOICE_BUTTONS = 6  # more choices than this are offered in a drop-down

#: ``decide(request_id, op, answer_or_None)`` and ``answer_from(request_id, field)``
#: (request id, op, answer text or None, the card's note box or None)
Decide = Callable[[str, str, str | None, Any], None]
AnswerFrom = Callable[[str, Any], None]


class MessageBudget:
    """At most ``per_second`` messages in any window of one second.

    A refresh ``spend``s as it sends and ``settle``s when it is done: the messages are
    stamped with the time the last of them went out, so a window never starts inside a
    burst and ends after the next one.
    """

    def __init__(self, per_second: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_second = per_second
        self._clock = clock
        self._sent: deque[tuple[float, int]] = deque()
        self._in_window = 0
        self._unsettled = 0

    def _trim(self, now: float) -> None:
        while self._sent and self._sent[0][0] <= now - 1.0:
            self._in_window -= self._sent.popleft()[1]

    def available(self) -> int:
        self._trim(self._clock())
        return self.per_second - self._in_window - self._unsettled

    def spend(self, count: int) -> None:
        self._unsettled += max(count, 0)

    def settle(self) -> None:
        if self._unsettled:
            self._sent.append((self._clock(), self._unsettled))
            self._in_window += self._unsettled
            self._unsettled = 0

    def wait(self) -> float:
        """Seconds until at least one more message may be sent."""
        now = self._clock()
        self._trim(now)
        if self._in_window + self._unsettled < self.per_second or not self._sent:
            return 0.0
        return self._sent[0][0] + 1.0 - now


class Kit:
    """Widgets that share one layout and one style per kind, so each costs one message."""

    def __init__(self) -> None:
        self.plain = widgets.Layout(width="auto")
        self.grow = widgets.Layout(flex="1 1 320px", min_width="240px")
        self.row = widgets.Layout(flex_flow="row wrap", align_items="center", width="100%")
        self.column = widgets.Layout(width="100%")
        self.button_style = widgets.ButtonStyle()
        self.html_style = HTMLStyle()
        # "initial": a label as wide as its text ("New instruction" was cut to "New instr…")
        self.text_style = TextStyle(description_width="initial")
        self.choice_style = DescriptionStyle(description_width="initial")

    def shared(self) -> list[Any]:
        return [
            self.plain,
            self.grow,
            self.row,
            self.column,
            self.button_style,
            self.html_style,
            self.text_style,
            self.choice_style,
        ]

    def button(self, label: str, kind: str = "", tooltip: str = "") -> widgets.Button:
        return widgets.Button(
            description=label,
            button_style=kind,
            tooltip=tooltip or label,
            layout=self.plain,
            style=self.button_style,
        )

    def html(self, value: str, grow: bool = False) -> widgets.HTML:
        layout = self.grow if grow else self.column
        return widgets.HTML(value=value, layout=layout, style=self.html_style)

    def text(self, placeholder: str, label: str = "", grow: bool = False) -> widgets.Text:
        layout = self.grow if grow else self.plain
        return widgets.Text(
            placeholder=placeholder, description=label, layout=layout, style=self.text_style
        )

    def dropdown(self, options: list[tuple[str, str]], label: str = "") -> widgets.Dropdown:
        return widgets.Dropdown(
            options=options, value=None, description=label, layout=self.plain,
            style=self.choice_style,
        )  # fmt: skip


@dataclass
class Card:
    """One open request with its buttons; ``parts`` are every widget it made."""

    request_id: str
    box: widgets.HBox
    parts: list[Any] = field(default_factory=list)


def card_cost(request: Request) -> int:
    """Messages a card for ``request`` costs to create (one per widget): box and text,
    then a note box and Approve/Reject, or a button per choice (a drop-down and Answer past
    ``MAX_CHOICE_BUTTONS``) or a text box and Answer, and Decline."""
    if request.kind != "question":
        return 5
    if request.choices and len(request.choices) <= MAX_CHOICE_BUTTONS:
        return 3 + len(request.choices)
    return 5


def make_card(
    kit: Kit, request: Request, agent: AgentView | None, decide: Decide, answer_from: AnswerFrom
) -> Card:
    """The card of one open request: its text and the buttons that decide it."""
    parts: list[Any] = [kit.html(text.request_card(request, agent), grow=True)]
    rid = request.id

    def on_click(button: Any, op: str, answer: str | None, note: Any = None) -> None:
        button.on_click(lambda _button: decide(rid, op, answer, note))

    if request.kind != "question":
        note = kit.text("for the agent (optional)", "Note")
        approve = kit.button("Approve", "success", f"approve {rid}")
        reject = kit.button("Reject", "danger", f"reject {rid}")
        on_click(approve, "approve", None, note)
        on_click(reject, "reject", None, note)
        parts += [note, approve, reject]
    elif request.choices and len(request.choices) <= MAX_CHOICE_BUTTONS:
        for choice in request.choices:
            label = choice if len(choice) <= 40 else choice[:39] + "…"  # shown as text
            button = kit.button(label, tooltip=f"answer {choice!r}")
            on_click(button, "answer", choice)
            parts.append(button)
    else:
        if request.choices:
            field_: Any = kit.dropdown([(c, c) for c in request.choices], "Answer")
        else:
            field_ = kit.text("your answer", "Answer")
        send = kit.button("Answer", "success", f"answer {rid}")
        send.on_click(lambda _button: answer_from(rid, field_))
        parts += [field_, send]
    if request.kind == "question":
        decline = kit.button("Decline", tooltip=f"decline to answer {rid}")
        on_click(decline, "reject", None)
        parts.append(decline)
    # the class is set in the constructor: add_class() would cost a message of its own
    box = widgets.HBox(parts, layout=kit.row, _dom_classes=(f"conductloop-request-{rid}",))
    return Card(rid, box, [box, *parts])
