"""The console in real Chromium against a real ``isotope serve`` on real PostgreSQL.

Every test fails on a console error or an uncaught exception in the page. Screenshots of each page
go to ``test-output/console/`` (``ISOTOPE_TEST_OUTPUT`` moves it).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, Page, Playwright, expect, sync_playwright

from tests.api.server import ApiServer
from tests.api.slow_model import SlowModel
from tests.console.browser import Watched, chromium_path, horizontal_overflow, watch
from tests.helpers import free_port

pytestmark = pytest.mark.browser

TOKEN = "browser-test-token-0123456789abcdef"
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
HOSTILE = '<script>window.__pwned = 1</script><img src=x onerror="window.__pwned = 2">'


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    with sync_playwright() as pw:
        yield pw


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    chromium = playwright.chromium.launch(executable_path=chromium_path())
    yield chromium
    chromium.close()


def _open(browser: Browser, url: str, viewport: dict[str, int] | None = None) -> Watched:
    context = browser.new_context(viewport=viewport or DESKTOP)  # type: ignore[arg-type]
    watched = watch(context.new_page())
    watched.page.goto(url)
    return watched


@pytest.fixture
def console(browser: Browser, server: ApiServer) -> Iterator[Watched]:
    watched = _open(browser, server.url + "/")
    yield watched
    watched.page.context.close()
    assert watched.errors == []


def _rows(page: Page) -> list[str]:
    return page.locator("table.sessions tbody tr td:first-child a").all_inner_texts()


def _search(page: Page, text: str, include_deleted: bool = False) -> None:
    page.get_by_role("link", name="Sessions", exact=True).click()
    page.get_by_label("Search sessions").fill(text)
    box = page.get_by_label("Include deleted")
    if box.is_checked() != include_deleted:
        box.set_checked(include_deleted)
    page.get_by_role("button", name="Search", exact=True).click()
    expect(page.locator(".summary")).to_contain_text(text)


def test_create_chat_reload_search_delete(console: Watched) -> None:
    """The issue's journey: new session, a streamed turn with its tool call and task, reload,
    search, delete, restore, erase."""
    page = console.page
    expect(page.get_by_role("heading", name="Sessions", level=1)).to_be_visible()
    console.shot("01-sessions")

    page.get_by_role("button", name="New session").click()
    message = page.get_by_role("textbox", name="Message")
    expect(message).to_be_focused()
    message.fill("add task: water the plants")
    page.get_by_role("button", name="Send").click()

    conversation = page.locator("ol.messages")
    expect(conversation.locator(".msg.toolcall")).to_contain_text("add_task")
    expect(conversation.locator(".msg.tool")).to_contain_text("Added task #1: water the plants")
    expect(conversation.locator(".msg.ai").last).to_have_text(re.compile("Added task #1: water the plants"))
    expect(page.get_by_role("status").filter(has_text="Saved")).to_contain_text("version 2, 4 messages")
    tasks = page.get_by_role("region", name="Tasks")
    expect(tasks).to_contain_text("water the plants")
    console.shot("02-session-after-turn")
    session_url = page.url

    page.reload()
    expect(page.locator("ol.messages .msg.human")).to_have_text(re.compile("add task: water the plants"))
    expect(page.get_by_role("region", name="Tasks")).to_contain_text("water the plants")
    expect(page.locator("ol.messages .msg.toolcall")).to_contain_text("add_task")
    console.shot("03-session-after-reload")
    name = page.get_by_role("heading", level=1).inner_text()

    _search(page, "water the plants")
    assert name in _rows(page)
    expect(page.locator("table.sessions")).to_contain_text("matched in messages")
    console.shot("04-search-english")

    page.get_by_role("link", name=name).click()
    expect(page).to_have_url(session_url)
    page.get_by_role("button", name="Delete", exact=True).click()
    expect(page.locator(".badge").first).to_have_text("deleted")
    expect(page.get_by_role("textbox", name="Message")).to_have_count(0)
    console.shot("05-session-deleted")

    _search(page, "water the plants")
    assert name not in _rows(page)
    _search(page, "water the plants", include_deleted=True)
    assert name in _rows(page)
    console.shot("06-search-include-deleted")

    page.get_by_role("link", name=name).click()
    page.get_by_role("button", name="Restore").click()
    expect(page.locator(".badge").first).to_have_text("active")
    expect(page.get_by_role("textbox", name="Message")).to_be_visible()

    page.get_by_role("button", name="Erase permanently").click()
    dialog = page.get_by_role("dialog")
    expect(dialog).to_contain_text("cannot be undone")
    console.shot("07-erase-confirmation")
    dialog.get_by_role("button", name="Cancel").click()
    expect(dialog).to_have_count(0)
    page.get_by_role("button", name="Erase permanently").click()
    page.get_by_role("dialog").get_by_role("button", name="Erase permanently").click()
    expect(page.get_by_role("heading", name="Sessions", level=1)).to_be_visible()
    _search(page, "water the plants", include_deleted=True)
    assert name not in _rows(page)


def test_a_chinese_phrase_is_found(console: Watched, server: ApiServer) -> None:
    page = console.page
    with server.client() as client:
        created = client.post("/api/sessions", json={"metadata": {"name": "新会话", "user_id": "user123"}})
        sid = created.json()["session_id"]
        client.post(f"/api/sessions/{sid}/messages", json={"content": "请帮我给植物浇水"})
        other = client.post("/api/sessions", json={"metadata": {"name": "散"}}).json()["session_id"]
        client.post(f"/api/sessions/{other}/messages", json={"content": "水很冷，我浇了花"})
    _search(page, "植物浇水")
    assert _rows(page) == ["新会话"]
    _search(page, "浇水")  # both characters are in the other session too, but not together
    assert _rows(page) == ["新会话"]
    _search(page, "user123")
    assert _rows(page) == ["新会话"]
    console.shot("08-search-chinese")


def test_stored_markup_is_shown_as_text(console: Watched, server: ApiServer) -> None:
    page = console.page
    with server.client() as client:
        created = client.post("/api/sessions", json={"metadata": {"name": HOSTILE, "user_id": HOSTILE}})
        sid = created.json()["session_id"]
        for content in (f"add task: {HOSTILE}", f"save file x.html: {HOSTILE}", HOSTILE):
            assert client.post(f"/api/sessions/{sid}/messages", json={"content": content}).status_code == 200
    page.reload()
    expect(page.locator("table.sessions")).to_contain_text(HOSTILE)
    console.shot("09-hostile-list")
    page.get_by_role("link", name=HOSTILE).first.click()
    expect(page.get_by_role("heading", level=1)).to_have_text(HOSTILE)
    expect(page.get_by_role("region", name="Tasks")).to_contain_text(HOSTILE)
    page.get_by_role("button", name="Open file x.html").click()
    expect(page.locator(".file-view pre")).to_have_text(HOSTILE)
    expect(page.locator("ol.messages .msg.human").last).to_have_text(re.compile(re.escape(HOSTILE)))
    console.shot("10-hostile-session")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img, main b").count() == 0


def test_statistics_and_the_turn_rate(console: Watched, server: ApiServer) -> None:
    page = console.page
    with server.client() as client:
        sid = client.post("/api/sessions", json={"metadata": {"name": "rate"}}).json()["session_id"]
        client.post(f"/api/sessions/{sid}/messages", json={"content": "hello"})
    page.get_by_role("link", name="Statistics").click()
    expect(page.get_by_role("heading", name="Statistics", level=1)).to_be_visible()
    total = page.locator(".stat", has_text="Total sessions").locator(".value")
    expect(total).to_have_text(re.compile(r"^[1-9]"))
    expect(page.locator(".stat", has_text="Turn rate").locator(".value")).to_have_text(re.compile(r"^[0-9.]+ / min$"))
    expect(page.locator(".stat", has_text="Turns since start").locator(".value")).not_to_have_text("0")
    expect(page.get_by_role("table")).to_contain_text(time.strftime("%Y-%m-%d", time.gmtime()))
    console.shot("11-statistics")
    page.get_by_role("button", name="Run cleanup now").click()
    expect(page.get_by_role("status").filter(has_text="Cleanup")).to_contain_text("deactivated 0 expired sessions")


def test_keyboard_only(console: Watched) -> None:
    page = console.page
    expect(page.get_by_role("heading", name="Sessions", level=1)).to_be_visible()
    for _ in range(12):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.textContent") == "New session":
            break
    else:
        raise AssertionError("Tab never reached the New session button")
    page.keyboard.press("Enter")
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    page.keyboard.type("add task: sweep the floor")
    page.keyboard.press("Enter")
    expect(page.get_by_role("region", name="Tasks")).to_contain_text("sweep the floor")
    expect(page.get_by_role("textbox", name="Message")).to_be_focused()
    page.keyboard.press("Shift+Tab")
    assert page.evaluate("document.activeElement.tagName") != "BODY"


def test_readable_at_phone_width(browser: Browser, server: ApiServer) -> None:
    with server.client() as client:
        sid = client.post("/api/sessions", json={"metadata": {"name": "phone " + "long-name-" * 8, "user_id": "u"}}
                          ).json()["session_id"]
        client.post(f"/api/sessions/{sid}/messages", json={"content": "add task: " + "x" * 300})
    watched = _open(browser, server.url + "/", PHONE)
    page = watched.page
    expect(page.get_by_role("heading", name="Sessions", level=1)).to_be_visible()
    expect(page.locator("table.sessions")).to_be_visible()
    assert horizontal_overflow(page) == 0
    watched.shot("12-phone-sessions")
    page.get_by_role("link", name=re.compile("^phone ")).click()
    expect(page.get_by_role("region", name="Tasks")).to_contain_text("xxx")
    assert horizontal_overflow(page) == 0
    watched.shot("13-phone-session")
    page.get_by_role("link", name="Statistics").click()
    expect(page.locator(".stat").first).to_be_visible()
    assert horizontal_overflow(page) == 0
    watched.shot("14-phone-statistics")
    page.context.close()
    assert watched.errors == []


def test_the_reply_streams_in_as_it_is_generated(browser: Browser, module_database_url: str,
                                                 tmp_path: Path) -> None:
    """With a model that sends one word every 0.25 s, the page shows part of the reply before the end."""
    with SlowModel() as model:
        srv = ApiServer(module_database_url, tmp_path, name="slow",
                        config={"engine": model.engine_config(), "api": {"cleanup_interval_s": 3600}})
        try:
            watched = _open(browser, srv.url + "/")
            page = watched.page
            page.get_by_role("button", name="New session").click()
            page.get_by_role("textbox", name="Message").fill("slow 8 0.25")
            page.get_by_role("button", name="Send").click()
            streaming = page.locator("ol.messages .msg.ai.streaming .text")
            expect(streaming).to_have_text(re.compile(r"\S"))  # the first words, while the rest is coming
            partial = streaming.inner_text()
            watched.shot("15-streaming")
            final = page.locator("ol.messages .msg.ai").last
            expect(page.get_by_role("status").filter(has_text="Saved")).to_be_visible(timeout=15_000)
            complete = final.inner_text()
            assert len(partial.split()) < len(complete.split()), (partial, complete)
            page.context.close()
            assert watched.errors == []
        finally:
            srv.stop()


def test_sign_in_with_the_api_key(browser: Browser, module_database_url: str, tmp_path: Path) -> None:
    srv = ApiServer(module_database_url, tmp_path, name="locked", config={"api": {"cleanup_interval_s": 3600}},
                    ISOTOPE_API_TOKEN=TOKEN)
    try:
        watched = _open(browser, srv.url + "/")
        page = watched.page
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        watched.shot("16-sign-in")
        page.get_by_label("API key").fill("not-the-key")
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("alert")).to_have_text("That key was not accepted.")
        assert [e for e in watched.errors if "401" not in e] == []  # the refused key's request
        watched.errors.clear()
        page.get_by_label("API key").fill(TOKEN)
        page.get_by_label("API key").press("Enter")
        expect(page.get_by_role("heading", name="Sessions", level=1)).to_be_visible()
        assert TOKEN not in page.url
        assert page.evaluate("sessionStorage.getItem('isotope.apiKey')") == TOKEN
        page.get_by_role("button", name="New session").click()
        page.get_by_role("textbox", name="Message").fill("add task: sign in")
        page.get_by_role("button", name="Send").click()
        expect(page.get_by_role("region", name="Tasks")).to_contain_text("sign in")
        page.reload()  # the key stays for this tab
        expect(page.get_by_role("region", name="Tasks")).to_contain_text("sign in")
        page.get_by_role("button", name="Sign out").click()
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        assert page.evaluate("sessionStorage.getItem('isotope.apiKey')") is None
        page.context.close()
        assert watched.errors == []
    finally:
        srv.stop()


def test_banner_while_postgresql_is_unreachable(browser: Browser, tmp_path: Path) -> None:
    """A server whose PostgreSQL refuses connections serves from the fallback; the page says so."""
    unreachable = f"postgresql://postgres@127.0.0.1:{free_port()}/isotope"
    srv = ApiServer(unreachable, tmp_path, name="fallback",
                    config={"api": {"cleanup_interval_s": 3600}, "store": {"connect_timeout_s": 0.5}})
    try:
        with srv.client() as client:
            deadline = time.monotonic() + 30
            while httpx.get(srv.url + "/ready").json().get("store") != "fallback":
                assert time.monotonic() < deadline, "the server never reported the fallback"
                time.sleep(0.1)
            sid = client.post("/api/sessions", json={"metadata": {"name": "during the outage"}}).json()["session_id"]
            assert client.post(f"/api/sessions/{sid}/messages", json={"content": "add task: wait"}).status_code == 200
        watched = _open(browser, srv.url + "/")
        page = watched.page
        banner = page.locator("#banner")
        expect(banner).to_contain_text("fallback")
        expect(banner).to_contain_text("PostgreSQL is unreachable")
        expect(banner).to_contain_text(re.compile(r"\(\d+ waiting\)"))
        _search(page, "during")
        assert _rows(page) == ["during the outage"]
        expect(page.locator("main")).to_contain_text("Message text was not searched")
        watched.shot("17-fallback-banner")
        page.context.close()
        assert watched.errors == []
    finally:
        srv.stop()
