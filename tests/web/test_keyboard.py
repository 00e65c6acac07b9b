"""The workspace without a mouse and for weak eyes, in headless Chromium: a person signs in, skips to the
content, composes and saves a campaign with the keyboard alone, always seeing where the focus is; and every
piece of text on the pages meets WCAG AA contrast against the background it is drawn on."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.app import create_app
from mailroom.config import Settings
from mailroom.db import libpq_url
from tests.support.campaigns import campaign
from tests.support.chrome import BROWSER_TESTS
from tests.support.http_server import serve_app
from tests.support.report_seed import seed_sent_campaign
from tests.support.workspace import printed_link
from tests.support.world import World

pytestmark = BROWSER_TESTS

# Each piece of visible text (SVG charts aside, whose marks are not text) against the first opaque background
# behind it: its contrast ratio (WCAG 2 relative luminance) and the least AA allows at its size.
LOW_CONTRAST = """
const rgb = c => (c.match(/[\\d.]+/g) || []).map(Number);
const channel = v => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
const lum = ([r, g, b]) => 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
const ground = el => {
  for (let e = el; e; e = e.parentElement) {
    const c = rgb(getComputedStyle(e).backgroundColor);
    if (c.length === 3 || c[3] > 0.99) return c.slice(0, 3);
  }
  return [255, 255, 255];
};
const low = [];
for (const el of document.querySelectorAll('body *')) {
  if (el.closest('svg, option')) continue;
  const own = [...el.childNodes].some(n => n.nodeType === 3 && n.textContent.trim());
  const box = el.getBoundingClientRect();
  const style = getComputedStyle(el);
  if (!own || box.width <= 1 || box.height <= 1 || box.bottom < 0 || style.visibility === 'hidden') continue;
  const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(ground(el))];
  const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
  const size = parseFloat(style.fontSize), bold = Number(style.fontWeight) >= 700;
  const least = size >= 24 || (size >= 18.66 && bold) ? 3 : 4.5;
  const what = `${el.tagName}.${el.className} "${el.textContent.trim().slice(0, 30)}"`;
  if (ratio < least) low.push(`${what} ${ratio.toFixed(2)}`);
}
return low;
"""


def tab_to(chrome: Any, matches: Any, *, most: int = 60) -> Any:
    """Press Tab until the focused element is the one ``matches`` accepts; each element passed on the way must
    show that it has the focus (a ring of its own, not the browser's default that a style may have removed)."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    for _ in range(most):
        ActionChains(chrome).send_keys(Keys.TAB).perform()
        focused = chrome.switch_to.active_element
        # On a date field's calendar button, which is the browser's own and draws its own ring, the field
        # itself does not match :focus.
        if focused.get_attribute("type") == "datetime-local" and not chrome.execute_script(
            "return document.activeElement.matches(':focus')"
        ):
            continue
        ring = focused.value_of_css_property("outline-style"), focused.value_of_css_property("outline-width")
        shown = focused.get_attribute("outerHTML")[:200]
        assert ring[0] != "none" and ring[1] != "0px", f"no visible focus on {shown}"
        if matches(focused):
            return focused
    raise AssertionError("never reached by Tab")


def press(chrome: Any, key: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains

    ActionChains(chrome).send_keys(key).perform()


def wait_for_title(chrome: Any, title: str) -> None:
    from selenium.webdriver.support.expected_conditions import title_contains
    from selenium.webdriver.support.wait import WebDriverWait

    WebDriverWait(chrome, 10).until(title_contains(title))


async def test_signing_in_composing_and_saving_need_only_the_keyboard(
    chrome: Any, world: World, settings: Settings, tmp_path: Path
) -> None:
    from selenium.webdriver.common.keys import Keys

    ann = await world.brand_admin(brand_name="Bay Realty")
    ann.data(await ann.post("/emails", campaign(**{"subject": "Holiday hours", "due_at": None})))
    app: FastAPI = create_app(settings.model_copy(update={"data_dir": tmp_path}))
    with serve_app(app, name="mailroom") as url:
        chrome.get(url + await printed_link(app, ann.user))
        tab_to(chrome, lambda e: e.tag_name == "button")
        press(chrome, Keys.ENTER)
        wait_for_title(chrome, "Campaigns")
        # The first Tab shows the skip link; following it puts the focus on the page's content.
        skip = tab_to(chrome, lambda e: True)
        assert skip.get_attribute("class") == "skip-link" and skip.rect["y"] >= 0
        press(chrome, Keys.ENTER)
        assert chrome.switch_to.active_element.get_attribute("id") == "main"
        tab_to(chrome, lambda e: e.tag_name == "a" and e.text == "New campaign")
        press(chrome, Keys.ENTER)
        wait_for_title(chrome, "New campaign")
        tab_to(chrome, lambda e: e.get_attribute("id") == "subject")
        press(chrome, "Open house, typed")
        tab_to(chrome, lambda e: e.get_attribute("id") == "html")
        press(chrome, "<p>Come by on Sunday.</p>")
        tab_to(chrome, lambda e: e.get_attribute("id") == "addresses")
        press(chrome, "jane@example.com")
        # A checkbox is ticked with the space bar.
        tab_to(chrome, lambda e: e.get_attribute("name") == "everyone")
        press(chrome, Keys.SPACE)
        tab_to(chrome, lambda e: e.tag_name == "button" and e.get_attribute("value") == "save")
        press(chrome, Keys.ENTER)
        wait_for_title(chrome, "Campaigns")
    answer = ann.data(await ann.get(f"/brands/{ann.brand}/emails/campaigns", params={"status": "draft"}))
    saved = {c["subject"]: c for c in answer}
    assert "Open house, typed" in saved


async def test_every_text_on_the_pages_meets_aa_contrast(
    chrome: Any, world: World, session: AsyncSession, settings: Settings, tmp_path: Path, database_url: str
) -> None:
    ann = await world.brand_admin(brand_name="Bay Realty")
    sent = ann.data(await ann.post("/emails", campaign(**{"subject": "October market report", "due_at": None})))
    executed = datetime.now(UTC) - timedelta(days=6)
    await session.execute(
        text("UPDATE email_campaigns SET due_at = :at, executed_at = :at WHERE id = :id"),
        {"at": executed, "id": sent["id"]},
    )
    await session.commit()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        seed_sent_campaign(conn, ann.brand, uuid.UUID(sent["id"]), executed, 120)
    app: FastAPI = create_app(settings.model_copy(update={"data_dir": tmp_path}))
    base = f"/app/brands/{ann.brand}"
    pages = [
        "/app/sign-in",
        f"{base}/campaigns",
        f"{base}/campaigns/new",
        f"{base}/campaigns/{sent['id']}",
        f"{base}/mailboxes",
        f"{base}/suppressions",
        "/app/notifications",
        "/app/account",
    ]
    with serve_app(app, name="mailroom") as url:
        chrome.get(url + "/app/sign-in")
        assert chrome.execute_script(LOW_CONTRAST) == [], "/app/sign-in"
        chrome.get(url + await printed_link(app, ann.user))
        chrome.find_element("css selector", "form button[type=submit]").click()
        wait_for_title(chrome, "Campaigns")
        for path in pages[1:]:
            chrome.get(url + path)
            assert chrome.execute_script(LOW_CONTRAST) == [], path
