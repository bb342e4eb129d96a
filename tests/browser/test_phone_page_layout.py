"""How the phone page looks in a real Chromium emulating phones: a dark colour scheme, a
small page that fits 360 px, and buttons that are 44 px touch targets.
"""

from __future__ import annotations

from pathlib import Path

from playwright.sync_api import expect

import conductloop_jupyter as cl
from tests.browser._support import LONG_NAME, Lab

STATIC = Path(cl.__file__).resolve().parent / "static" / "phone"


# For every visible button in ``root``: its box, and the height of the area where a tap
# lands on it (an agent's name button is stretched over its whole card by a pseudo-element).
BUTTON_TARGETS = """(root) => {
  const found = [];
  for (const button of document.querySelector(root).querySelectorAll("button")) {
    if (!button.getClientRects().length) continue;
    button.scrollIntoView({ block: "center" });
    const box = button.getBoundingClientRect();
    const x = Math.min(Math.max(box.left + box.width / 2, 0), innerWidth - 1);
    let top = null, bottom = null;
    const from = Math.max(0, Math.floor(box.top) - 80), to = Math.min(innerHeight, box.bottom + 80);
    for (let y = from; y < to; y++) {
      const hit = document.elementFromPoint(x, y);
      if (hit && button.contains(hit)) { if (top === null) top = y; bottom = y; }
    }
    found.push({ label: button.textContent.trim(), box: box.height,
                 target: top === null ? 0 : bottom - top + 1 });
  }
  window.scrollTo(0, 0);
  return found;
}"""


def test_the_page_follows_a_dark_color_scheme(lab: Lab) -> None:
    lab.start("worker")
    lab.request_of(lab.start("deploy", "api"))
    phone = lab.paired(color_scheme="dark")
    expect(phone.request("Deploy api?")).to_be_visible()
    background = phone.page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(16, 18, 22)"
    phone.shot("dark")


def test_the_page_is_small_fits_360_px_and_every_button_is_a_44_px_target(lab: Lab) -> None:
    size = sum((STATIC / name).stat().st_size for name in ("index.html", "app.js", "app.css"))
    assert size <= 30 * 1024

    lab.start(LONG_NAME)
    lab.request_of(lab.start("deploy", "a-very-long-service-name-without-any-spaces-in-it"))
    lab.request_of(lab.start("pick"))
    lab.request_of(lab.start("title"))
    phone = lab.paired(viewport={"width": 360, "height": 740})
    page = phone.page
    expect(phone.needs.get_by_role("article")).to_have_count(3)
    expect(phone.agents.get_by_role("listitem")).to_have_count(4)

    def fits(state: str, root: str = "body") -> None:
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 360, f"{state}: the page is {width} px wide"
        small = [b for b in page.evaluate(BUTTON_TARGETS, root) if b["target"] < 44]
        assert not small, f"{state}: buttons smaller than 44 px: {small}"

    fits("main view")
    page.get_by_role("button", name=LONG_NAME).click()
    detail = page.get_by_role("region", name=LONG_NAME)
    expect(detail.get_by_role("list", name="Recent events")).to_contain_text("agent.started")
    detail.get_by_label("New instruction").fill("x" * 300)
    detail.get_by_role("button", name="Redirect").click()
    expect(detail.get_by_role("list", name="Recent events")).to_contain_text("x" * 100)
    fits("detail")
    detail.get_by_role("button", name="Back").click()
    phone.button("Stop all").click()
    expect(page.get_by_role("dialog")).to_be_visible()
    fits("dialog", "dialog[open]")  # the page behind a modal dialog takes no taps
