"""The dashboard in a real browser (headless Debian Chromium, driven by Playwright; ADR 16): it loads with
no console error and no request to another host, its counts move without a reload, and its buttons act,
as RESP then sees. One server and one browser serve the module, to keep the suite fast."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import pytest
import redis

from tests.browser import browser, require_browser
from tests.support import ServerProcess, free_port

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    require_browser()
    with browser() as launched:
        yield launched


@pytest.fixture(scope="module")
def dash(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    proc = ServerProcess(tmp_path_factory.mktemp("dash") / "data", backend="memory", http_port=free_port())
    proc.start()
    yield proc
    proc.kill()


class Watched:
    """A page with every request and every console error or page error it caused."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.requests: list[str] = []
        self.errors: list[str] = []
        page.on("request", lambda request: self.requests.append(request.url))
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        # The page asks before destructive actions; the test is the operator who says yes.
        page.on("dialog", lambda dialog: dialog.accept())
        page.set_default_timeout(TIMEOUT_MS)


@pytest.fixture
def watched(chromium: Browser) -> Iterator[Watched]:
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield Watched(context.new_page())
    finally:
        context.close()


def fields(reply: Any) -> dict[str, Any]:
    return dict(zip(reply[::2], reply[1::2], strict=True)) if isinstance(reply, list) else dict(reply)


def resp(server: ServerProcess) -> redis.Redis:
    return redis.Redis(port=server.port, decode_responses=True)


def origin(server: ServerProcess) -> str:
    return f"http://127.0.0.1:{server.http_port}"


def test_pages_load_with_no_error_and_no_other_host(dash: ServerProcess, watched: Watched) -> None:
    client = resp(dash)
    client.execute_command("QCREATE", "load-dead")
    client.execute_command("QCREATE", "load", "PARTITIONS", "2", "DEAD-QUEUE", "load-dead")
    client.execute_command("QPRODUCE", "load", "ITEMS", "a", "b")
    page = watched.page
    page.goto(origin(dash) + "/")
    page.locator('tr[data-queue="load"] td.ready').filter(has_text="2").wait_for()
    assert page.locator("#chart-throughput canvas").count() == 1
    page.click('tr[data-queue="load"] a')
    page.locator("#items tr[data-item]").first.wait_for()
    assert page.locator("#partitions tbody tr").count() == 2
    page.wait_for_timeout(2500)  # one poll more on the queue page
    assert watched.errors == []
    assert watched.requests, "the page made no request at all"
    hosts = {f"{urlsplit(url).scheme}://{urlsplit(url).netloc}" for url in watched.requests}
    assert hosts == {origin(dash)}, watched.requests


def test_counts_update_without_reload(dash: ServerProcess, watched: Watched) -> None:
    client = resp(dash)
    client.execute_command("QCREATE", "live")
    page = watched.page
    page.goto(origin(dash) + "/")
    ready = page.locator('tr[data-queue="live"] td.ready')
    ready.filter(has_text=re.compile("^0$")).wait_for()
    navigations: list[str] = []
    page.on("framenavigated", lambda frame: navigations.append(frame.url))
    client.execute_command("QPRODUCE", "live", "ITEMS", *[f"x{i}" for i in range(7)])
    ready.filter(has_text=re.compile("^7$")).wait_for()
    client.execute_command("QLEASE", "live", "COUNT", "3")
    page.locator('tr[data-queue="live"] td.leased').filter(has_text=re.compile("^3$")).wait_for()
    # The produce rate is computed from two reads of the counter: a number once there are two.
    rate = page.locator('tr[data-queue="live"] td.produced-rate').inner_text()
    assert re.fullmatch(r"[0-9.]+", rate), rate
    assert navigations == []
    assert watched.errors == []


def test_buttons_act_as_resp_sees(dash: ServerProcess, watched: Watched) -> None:
    client = resp(dash)
    client.execute_command("QCREATE", "act-dead")
    client.execute_command("QCREATE", "act", "DEAD-QUEUE", "act-dead")
    client.execute_command("QCREATE", "act-other")
    page = watched.page
    page.goto(origin(dash) + "/#/queue/act")
    page.locator("#q-name").filter(has_text="act").wait_for()

    page.click("#q-actions [data-action=pause]")
    page.locator("#q-paused").wait_for()
    assert int(fields(client.execute_command("QINFO", "act"))["paused"]) == 1
    page.click("#q-actions [data-action=resume]")
    page.locator("#q-paused").wait_for(state="hidden")
    assert int(fields(client.execute_command("QINFO", "act"))["paused"]) == 0

    ids = client.execute_command("QPRODUCE", "act", "ITEMS", "keep", "drop")
    page.reload()
    page.locator(f'#items tr[data-item="{ids[1]}"] [data-action=remove]').click()
    page.locator(f'#items tr[data-item="{ids[1]}"]').wait_for(state="detached")
    assert client.execute_command("QGET", "act", ids[1]) is None
    assert client.execute_command("QLEN", "act") == 1

    # The remove above left the same words in the message: blank it, so the wait below is for the clear's.
    page.evaluate("document.querySelector('#q-message').textContent = ''")
    page.click("#q-actions [data-action=clear]")
    page.locator("#q-message").filter(has_text="1 items removed").wait_for()
    assert client.execute_command("QLEN", "act") == 0

    client.execute_command("QPRODUCE", "act", "ITEMS", "d1", "d2", "d3")
    for item in client.execute_command("QLEASE", "act", "COUNT", "3"):
        client.execute_command("QRETRY", "act", "DEAD", "REASON", "broken", item[0])
    page.goto(origin(dash) + "/#/queue/act-dead")
    page.locator("#items td").filter(has_text="retry-dead").first.wait_for()
    assert page.locator("#items td").filter(has_text="broken").count() == 3
    page.fill("#redrive-limit", "1")
    page.click("#q-actions [data-action=redrive]")
    page.locator("#q-message").filter(has_text="1 items redriven").wait_for()
    assert client.execute_command("QLEN", "act") == 1
    page.select_option("#redrive-to", "act-other")
    page.fill("#redrive-limit", "5")
    page.click("#q-actions [data-action=redrive]")
    page.locator("#q-message").filter(has_text="2 items redriven").wait_for()
    assert (
        client.execute_command("QLEN", "act-other") == 2 and client.execute_command("QLEN", "act-dead") == 0
    )
    assert watched.errors == []


def test_a_user_without_admin_sees_its_queues_and_no_buttons(tmp_path: Path, chromium: Browser) -> None:
    config = tmp_path / "querator.toml"
    config.write_text(
        'requirepass = "admin-pass"\n[[user]]\nname = "viewer"\npassword = "viewer-pass"\n'
        'queues = ["orders*"]\ncommands = ["consume"]\n'
    )
    server = ServerProcess(
        tmp_path / "data", "--config", str(config), backend="memory", http_port=free_port()
    )
    server.start()
    context = chromium.new_context(http_credentials={"username": "viewer", "password": "viewer-pass"})
    try:
        client = redis.Redis(port=server.port, password="admin-pass")
        client.execute_command("QCREATE", "orders")
        client.execute_command("QCREATE", "payroll")
        watched = Watched(context.new_page())
        watched.page.goto(origin(server) + "/")
        watched.page.locator('tr[data-queue="orders"]').wait_for()
        assert watched.page.locator("tr[data-queue]").count() == 1
        assert not watched.page.locator('tr[data-queue="orders"] [data-action]').is_visible()
        assert watched.errors == []
    finally:
        context.close()
        server.kill()
