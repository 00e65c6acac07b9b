"""The workspace in a real browser: Debian's headless Chromium, driven through chromedriver by Selenium.

Nothing here downloads a browser or a driver: without /usr/bin/chromium and /usr/bin/chromedriver (Debian's
chromium and chromium-driver packages) the test skips and says so. With MAILROOM_SCREENSHOTS set to a
folder (`make screenshots`) it also saves the pages it saw there.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from mailroom.app import create_app
from mailroom.config import Settings
from mailroom.db import libpq_url
from mailroom.transports.registry import outbox_folder
from tests.support.campaigns import campaign
from tests.support.chrome import BROWSER_TESTS, pressed, resized, save_screenshot
from tests.support.http_server import serve_app
from tests.support.report_seed import seed_sent_campaign
from tests.support.sender import running_worker
from tests.support.uploads import PDF
from tests.support.workspace import link_path
from tests.support.world import World

pytestmark = BROWSER_TESTS

# Drafts first made, oldest first; then one scheduled, the newest.
SUBJECTS = ("Holiday hours", "October market report", "Price drop on Elm Street", "Spring listings are here")


async def seed(
    session: AsyncSession, world: World, database_url: str, *, with_report: bool = True
) -> tuple[Any, str, uuid.UUID | None]:
    """A brand with campaigns in each state a list shows; its Admin, their address and, ``with_report``, the
    campaign whose 1,240 recipients and their doings the report page shows (else None)."""
    ann = await world.brand_admin(brand_name="Bay Realty", first="Ann", last="Agent")
    await session.execute(text("UPDATE users SET display_name = 'Ann Agent' WHERE id = :id"), {"id": ann.user})
    await session.commit()
    # A team under the brand: the switcher offers both.
    ann.data(await ann.post("/brands", {"name": "Bay Realty Downtown", "parent": str(ann.brand)}))
    for subject in SUBJECTS:
        ann.data(await ann.post("/emails", campaign(**{"from": str(ann.user), "subject": subject, "due_at": None})))
    ann.data(await ann.post("/emails", campaign(**{"from": str(ann.user), "subject": "Open house this Sunday"})))
    executed = (
        "UPDATE email_campaigns SET due_at = now() - make_interval(days => :days), "
        "executed_at = now() - make_interval(days => :days), recipients_count = :n, sent = :sent, failed = :failed, "
        "delivered = :delivered, opened = :opened, clicked = :clicked, failed_at = :failed_at WHERE subject = :s"
    )
    stories = (
        ("Holiday hours", 9, 380, 0, 0, 0, 0, 0, "now()"),
        ("October market report", 6, 1240, 1236, 4, 1228, 611, 143, None),
        ("Price drop on Elm Street", 0, 860, 512, 0, 497, 88, 12, None),
    )
    for s, days, n, sent, failed, delivered, opened, clicked, failed_at in stories:
        params = dict(s=s, days=days, n=n, sent=sent, failed=failed, delivered=delivered, opened=opened)
        params.update(clicked=clicked, failed_at=datetime.now(UTC) if failed_at else None)
        await session.execute(text(executed), params)
    await session.commit()
    email = (await session.execute(text("SELECT email FROM users WHERE id = :id"), {"id": ann.user})).scalar_one()
    if not with_report:
        return ann, str(email), None
    # The October report's recipients and what they did, as the report page shows them.
    found = await session.execute(
        text("SELECT id, executed_at FROM email_campaigns WHERE subject = 'October market report'")
    )
    report, executed = found.one()
    with psycopg.connect(libpq_url(database_url), autocommit=True) as conn:
        seed_sent_campaign(conn, ann.brand, report, executed, 1240)
    return ann, str(email), report


def first_mail_in(folder: Path) -> str | None:
    found = sorted(folder.glob("*.eml")) if folder.is_dir() else []
    return found[0].read_text() if found else None


async def wait_for_mail(folder: Path, *, within: float = 20.0) -> str:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        mail = first_mail_in(folder)
        if mail is not None:
            return mail
        await asyncio.sleep(0.1)
    raise AssertionError(f"no mail in {folder} after {within}s")


async def test_a_person_signs_in_with_the_mailed_link_and_sees_the_campaigns(
    chrome: Any, world: World, session: AsyncSession, settings: Settings, tmp_path: Path, database_url: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import title_contains
    from selenium.webdriver.support.wait import WebDriverWait

    def press_and_wait(button: str, title: str) -> None:
        chrome.find_element(By.CSS_SELECTOR, button).click()
        WebDriverWait(chrome, 10).until(title_contains(title))

    ann, email, report = await seed(session, world, database_url)
    # A data folder of its own: the outbox holds only this test's mail.
    local = settings.model_copy(update={"data_dir": tmp_path})
    app: FastAPI = create_app(local)
    with serve_app(app, name="mailroom") as url:
        chrome.get(url + "/app/")
        assert chrome.current_url == url + "/app/sign-in"
        chrome.find_element(By.ID, "email").send_keys(email)
        press_and_wait("form button[type=submit]", "Check your mail")
        assert str(outbox_folder(local)) in chrome.page_source
        async with running_worker(local, transport="outbox", public_url=url):
            mail = await wait_for_mail(outbox_folder(local))
        chrome.get(url + link_path(mail))
        press_and_wait("form button[type=submit]", "Campaigns")
        assert chrome.current_url == f"{url}/app/brands/{ann.brand}/campaigns"
        rows = chrome.find_elements(By.CSS_SELECTOR, "tbody tr")
        shown = {row.find_element(By.TAG_NAME, "th").text: row.text for row in rows}
        assert list(shown) == ["Open house this Sunday", *reversed(SUBJECTS)]
        assert "Sent" in shown["October market report"] and "97.0%" in shown["October market report"]
        switcher = chrome.find_elements(By.CSS_SELECTOR, "#brand option")
        assert [option.text for option in switcher] == ["Bay Realty", "Bay Realty Downtown"]
        assert "Ann Agent" in chrome.find_element(By.CLASS_NAME, "topbar").text
        # The page's own stylesheet applied: nothing the policy allows came from elsewhere, nothing was blocked.
        assert chrome.find_element(By.CLASS_NAME, "topbar").value_of_css_property("display") == "flex"
        save_screenshot(chrome, "campaigns.png")
        # At a phone's width each campaign is a card and nothing scrolls sideways.
        resized(chrome, 390, 844)
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 390
        save_screenshot(chrome, "campaigns-phone.png")
        chrome.set_window_size(1280, 860)
        # The report of a sent campaign: every number as GET /emails/:id/stats answers it.
        press_and_wait("th.subject a[href$='" + str(report) + "']", "Report")
        stats = ann.data(await ann.get(f"/emails/{report}/stats"))
        for cell in chrome.find_elements(By.CSS_SELECTOR, "[data-stat]"):
            value: Any = stats
            for part in cell.get_attribute("data-stat").split("."):
                value = value[part]
            assert cell.get_attribute("textContent").replace(",", "") == str(value), cell.get_attribute("data-stat")
        assert chrome.find_element(By.CSS_SELECTOR, ".chart svg rect.bar-opened").is_displayed()
        assert len(chrome.find_elements(By.CSS_SELECTOR, "#people tbody tr")) == 50
        chrome.set_window_size(1280, 2400)
        save_screenshot(chrome, "report.png")
        resized(chrome, 390, 2000)
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 390
        save_screenshot(chrome, "report-phone.png")
        press_and_wait(".topbar button[type=submit]", "Sign in")
        assert chrome.current_url == url + "/app/sign-in"


async def test_a_person_composes_previews_tests_schedules_and_sends_a_campaign(
    chrome: Any, world: World, session: AsyncSession, settings: Settings, tmp_path: Path, database_url: str
) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.select import Select

    from tests.support.workspace import printed_link

    # Without the report's 1,240 contacts: the contacts offered for a preview are this test's own.
    ann, _, _ = await seed(session, world, database_url, with_report=False)
    await world.contact(ann, "maria.lopez@example.com", first_name="Maria", last_name="Lopez", tags=["Buyers"])
    await world.contact(ann, "sam.chen@example.com", first_name="Sam", last_name="Chen", tags=["Buyers", "Sellers"])
    await world.crm_list(ann, "Open house visitors")
    local = settings.model_copy(update={"data_dir": tmp_path})
    app: FastAPI = create_app(local)
    with serve_app(app, name="mailroom") as url:
        chrome.get(url + await printed_link(app, ann.user))
        pressed(chrome, "form button[type=submit]", "Campaigns")
        pressed(chrome, ".toolbar a.button", "New campaign")
        chrome.find_element(By.ID, "subject").send_keys("{{ recipient.first_name }}, open house this Sunday")
        chrome.find_element(By.ID, "html").send_keys(
            '<h1 style="font-family:sans-serif">Open house</h1>\n'
            '<p style="font-family:sans-serif">Hi {{ recipient.first_name }}, come by 12 Elm Street on Sunday '
            "from 1 to 4 pm.</p>"
        )
        chrome.find_element(By.CSS_SELECTOR, "input[name=tags][value=Buyers]").click()
        chrome.find_element(By.ID, "contact_search").send_keys("lopez")
        pressed(chrome, "button[value=search]", "New campaign")
        # The search kept what was typed, and offers the match to tick and to preview for.
        assert "open house this Sunday" in chrome.find_element(By.ID, "subject").get_attribute("value")
        chrome.find_element(By.CSS_SELECTOR, "input[name=contacts]").click()
        Select(chrome.find_element(By.ID, "preview_contact")).select_by_visible_text(
            "Maria Lopez (maria.lopez@example.com)"
        )
        # A file chosen in the form is stored when the form is sent, whichever button sends it.
        flyer = tmp_path / "open-house-flyer.pdf"
        flyer.write_bytes(PDF)
        chrome.find_element(By.ID, "upload").send_keys(str(flyer))
        pressed(chrome, "button[value=preview]", "Edit campaign")
        assert chrome.find_element(By.CLASS_NAME, "preview-subject").text == "Maria, open house this Sunday"
        attached = chrome.find_element(By.CSS_SELECTOR, ".attachments input[name=attachments]")
        assert (
            attached.is_selected() and "open-house-flyer.pdf" in chrome.find_element(By.CLASS_NAME, "attachments").text
        )
        frame = chrome.find_element(By.CSS_SELECTOR, ".frame-desktop iframe")
        chrome.switch_to.frame(frame)
        assert "Hi Maria, come by 12 Elm Street" in chrome.find_element(By.TAG_NAME, "body").text
        chrome.switch_to.default_content()
        chrome.set_window_size(1280, 1500)
        save_screenshot(chrome, "compose.png")
        resized(chrome, 390, 844)
        # What sticks out, named in the failure.
        wide = chrome.execute_script(
            "return [...document.querySelectorAll('body *')].filter(e => e.getBoundingClientRect().right > 390)"
            ".map(e => e.tagName + '.' + e.className + '#' + e.id + ':' + Math.round(e.getBoundingClientRect().right))"
        )
        assert chrome.execute_script("return document.documentElement.scrollWidth") <= 390, wide
        save_screenshot(chrome, "compose-phone.png")
        chrome.set_window_size(1280, 860)
        chrome.find_element(By.CSS_SELECTOR, "input[name=schedule][value=at]").click()
        # A datetime-local field's typing order follows the browser's locale; its value does not.
        chrome.execute_script("arguments[0].value = '2031-05-01T15:00'", chrome.find_element(By.ID, "send_at"))
        pressed(chrome, "button[value=save]", "Confirm sending")
        confirmation = chrome.find_element(By.TAG_NAME, "main").text
        assert "2 recipients" in confirmation and "2031-05-01 15:00 UTC" in confirmation
        pressed(chrome, "main form button[type=submit]", "Campaigns")
        row = chrome.find_element(By.CSS_SELECTOR, "tbody tr")
        assert "open house this Sunday" in row.text and "Scheduled" in row.text and "2031-05-01 15:00 UTC" in row.text
        # A test to me first (which keeps it as a draft), then sent now: the worker mails both.
        found = await session.execute(
            text("SELECT id FROM email_campaigns WHERE subject LIKE '%open house this Sunday'")
        )
        (campaign_id,) = found.one()
        chrome.get(f"{url}/app/brands/{ann.brand}/campaigns/{campaign_id}/edit")
        pressed(chrome, "button[value=test]", "Edit campaign")
        assert "A test is on its way" in chrome.find_element(By.CSS_SELECTOR, ".notice-ok").text
        chrome.find_element(By.CSS_SELECTOR, "input[name=schedule][value=now]").click()
        pressed(chrome, "button[value=save]", "Confirm sending")
        assert "2 recipients" in chrome.find_element(By.TAG_NAME, "main").text
        pressed(chrome, "main form button[type=submit]", "Campaigns")
        async with running_worker(local, transport="outbox", public_url=url):
            deadline = time.monotonic() + 30
            while "Sent" not in chrome.find_element(By.CSS_SELECTOR, "tbody tr").text:
                assert time.monotonic() < deadline, chrome.find_element(By.CSS_SELECTOR, "tbody tr").text
                await asyncio.sleep(0.5)
                chrome.refresh()
    subjects = sorted(
        line.removeprefix("Subject: ")
        for mail in outbox_folder(local).glob("*.eml")
        for line in mail.read_text().splitlines()
        if line.startswith("Subject: ")
    )
    assert subjects[:2] == ["Maria, open house this Sunday", "Sam, open house this Sunday"]
    assert len(subjects) == 3 and subjects[2].startswith("[Test] ")
    files = (
        await session.execute(
            text("SELECT f.name, f.mime FROM email_campaign_attachments a JOIN files f ON f.id = a.file")
        )
    ).all()
    assert [tuple(f) for f in files] == [("open-house-flyer.pdf", "application/pdf")]
