"""The dashboard in a real browser: Playwright drives Debian's headless Chromium
(``/usr/bin/chromium``, never Playwright's own download) against the real ``sluiceway serve``
as a subprocess, on a flows folder with a sample flow that takes a param and logs a line per
task. One browser and one service for the whole file.

Screenshots go to ``test-artifacts/dashboard/`` at the repository root (ignored by git).

The sample flow's middle task waits for a gate file (``gate-<run id>`` beside the flows
folder), so a test sees a run running before it lets it finish: the page must turn green by
itself, without a reload.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Response,
    Route,
    expect,
    sync_playwright,
)

from runtime.service.web.static import static_url
from tests.service.api_server import TOKEN
from tests.service.served import Home, Served
from tests.waiting import WAIT

pytestmark = pytest.mark.slow  # a browser and a service, each a process

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts" / "dashboard"
UI_WAIT = 20_000  # milliseconds a page may take to show what a test waits for

FLOW = '''
"""hello: greets someone, waits for its gate file, reports."""

from pathlib import Path

import anyio

from runtime import Flow, Run

HOME = Path(__file__).resolve().parent.parent

hello = Flow("hello", params={"who": "world"}, description="greets, waits for a gate, reports")


@hello.task
def greet(run: Run) -> str:
    run.log.info("hello %s", run.params["who"])
    return str(run.params["who"])


@hello.task
async def wait(run: Run, greet: str) -> str:
    run.log.info("waiting for gate-%s", run.id)
    while not (HOME / f"gate-{run.id}").exists():
        await anyio.sleep(0.05)
    run.log.info("gate open")
    return greet


@hello.task
def report(run: Run, wait: str) -> None:
    run.log.info("report for %s", wait)
'''


@dataclass(frozen=True, slots=True)
class Service:
    """The served dashboard: its URL, its folder, the process."""

    url: str
    home: Home
    served: Served

    def open_gate(self, run_id: int) -> None:
        (self.home.root / f"gate-{run_id}").touch()

    def trigger(self, **params: Any) -> int:
        """Queue a run of ``hello`` through the API (bearer token); its id."""
        request = urllib.request.Request(
            f"{self.url}/api/flows/hello/runs",
            data=orjson.dumps({"params": params}),
            headers={"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=WAIT) as response:
            run_id: int = orjson.loads(response.read())["id"]
        return run_id

    def wait_state(self, run_id: int, state: str) -> None:
        self.home.wait_rows(
            "SELECT state FROM runs WHERE id = ?",
            run_id,
            what=f"run {run_id} {state}",
            until=lambda rows: bool(rows) and rows[0][0] == state,
        )


def free_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as probe:
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Chromium from Debian (``make test`` installs it when run as root)."""
    if not CHROMIUM.exists():
        if os.geteuid() == 0:
            pytest.fail(f"{CHROMIUM} is missing: `make test` installs Debian's chromium as root")
        pytest.skip(f"{CHROMIUM} is missing and we are not root to install it (apt chromium)")
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as playwright:
        # as root, Chromium refuses to start with its sandbox on
        args = ["--no-sandbox"] if os.geteuid() == 0 else []
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=args
        )
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    """``sluiceway serve`` with ``[api]`` on 127.0.0.1 and a free port, with a token."""
    home = Home(tmp_path_factory.mktemp("dashboard"))
    (home.flows / "hello.py").write_text(FLOW)
    port = free_port()
    served = home.serve(SLUICEWAY_API_BIND=f"127.0.0.1:{port}", SLUICEWAY_API_TOKEN=TOKEN)
    try:
        served.wait_ready()
        yield Service(f"http://127.0.0.1:{port}", home, served)
        served.send(signal.SIGTERM)
        served.wait_exit(WAIT)
    finally:
        home.cleanup()


def console_errors(page: Page) -> list[str]:
    """Errors from now on: what the page logs (a CSP violation, a script that throws) and
    every response of 400 or more but the favicon's, which the service does not have."""
    errors: list[str] = []

    def keep(message: ConsoleMessage) -> None:
        if message.type == "error" and not message.text.startswith("Failed to load resource"):
            errors.append(message.text)

    def status(response: Response) -> None:
        if response.status >= 400 and not response.url.endswith("/favicon.ico"):
            errors.append(f"{response.status} {response.url}")

    page.on("console", keep)
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("response", status)
    return errors


def shot(page: Page, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


# --- the harness and live.js, on a page built to the DOM contract ---


def contract_run_page(run_id: int, version: int) -> str:
    """A run page as the dashboard's DOM contract describes it, served at the service's own
    origin (through Playwright), loading the service's live.js."""
    # as the page would show it while the run waits at its gate
    states = {"greet": "succeeded", "wait": "running", "report": "pending"}
    nodes = "".join(
        f'<g class="node st-{state}" data-run="{run_id}" data-task="{name}">'
        f'<rect x="{10 + 110 * i}" y="10" width="100" height="30"></rect></g>'
        for i, (name, state) in enumerate(states.items())
    )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>run {run_id}</title>
<link rel="stylesheet" href="{static_url("app.css")}">
<script src="{static_url("live.js")}" defer></script></head>
<body data-live="run" data-run="{run_id}">
<span id="run-state" class="state st-running" data-run="{run_id}" data-state-text>running</span>
<svg id="dag" width="400" height="50">{nodes}</svg>
<section id="facts" data-refresh><p id="version">version {version}</p></section>
<div id="log-tail" data-run="{run_id}"></div>
</body></html>"""


def test_the_harness_and_live_updates_on_a_contract_page(
    browser: Browser, service: Service
) -> None:
    """Runs on every branch: Chromium starts, pages of the service load through the bearer
    token, screenshots are saved; and live.js, on a page built to the DOM contract, follows
    a real run to its end without a reload: states, log lines as text, the section refresh."""
    context = browser.new_context(
        extra_http_headers={"Authorization": f"Bearer {TOKEN}"},
        viewport={"width": 1280, "height": 800},
    )
    try:
        page = context.new_page()
        errors = console_errors(page)
        health = page.goto(f"{service.url}/healthz")
        assert health is not None
        assert health.status == 200
        assert orjson.loads(health.body()) == {"ok": True}
        css = page.goto(service.url + static_url("app.css"))
        assert css is not None
        assert css.status == 200
        assert css.header_value("content-type") == "text/css; charset=utf-8"

        run_id = service.trigger(who="<b>Ada</b>")  # markup in a param: shown as text
        service.wait_state(run_id, "running")
        served_versions: list[int] = []

        def fulfil(route: Route) -> None:
            served_versions.append(len(served_versions) + 1)
            body = contract_run_page(run_id, served_versions[-1])
            route.fulfill(status=200, content_type="text/html", body=body)

        page.route(f"{service.url}/contract/run", fulfil)
        page.goto(f"{service.url}/contract/run")
        page.evaluate("window.__marker = 1")
        tail = page.locator("#log-tail .log-line")
        expect(tail.first.locator(".msg")).to_have_text("hello <b>Ada</b>", timeout=UI_WAIT)
        expect(tail.first).to_have_class(re.compile(r"\blvl-info\b"))
        assert page.locator("#log-tail b").count() == 0  # never parsed as HTML

        service.open_gate(run_id)
        state = page.locator("#run-state")
        expect(state).to_have_class(re.compile(r"\bst-succeeded\b"), timeout=UI_WAIT)
        expect(state).to_have_text("succeeded")
        expect(state).to_have_class(re.compile(r"^state st-succeeded$"))  # st-running is gone
        for task in ("greet", "wait", "report"):
            node = page.locator(f'#dag g.node[data-task="{task}"]')
            expect(node).to_have_class("node st-succeeded", timeout=UI_WAIT)
        expect(tail.locator(".msg", has_text="report for <b>Ada</b>")).to_have_count(
            1, timeout=UI_WAIT
        )
        messages = tail.locator(".msg").all_text_contents()
        assert messages == [
            "hello <b>Ada</b>",
            f"waiting for gate-{run_id}",
            "gate open",
            "report for <b>Ada</b>",
        ]
        ids = [int(i) for i in tail.evaluate_all("els => els.map(e => e.dataset.id)")]
        assert ids == sorted(ids)
        stamp = tail.first.locator(".ts")
        assert re.fullmatch(r"\d\d:\d\d:\d\d(\.\d{1,3})?", stamp.inner_text())
        assert re.fullmatch(r"\d{4}-.*Z", stamp.get_attribute("title") or "")
        # the run's end re-fetched the page and swapped its [data-refresh] section
        expect(page.locator("#version")).not_to_have_text("version 1", timeout=UI_WAIT)
        assert page.evaluate("window.__marker") == 1, "the page was reloaded"
        shot(page, "live-contract-page")
        assert errors == []
    finally:
        context.close()


# --- the dashboard, end to end (needs the pages and the login of the dashboard issue) ---


def wait_for_class(page: Page, selector: str, state: str) -> None:
    expect(page.locator(selector)).to_have_class(re.compile(rf"\bst-{state}\b"), timeout=UI_WAIT)


def test_the_dashboard_end_to_end(browser: Browser, service: Service) -> None:
    """Log in with the token, open the dashboard and the flow, trigger it with a param from
    its form, watch the run turn green without a reload, see its graph, Gantt and log lines,
    and find a log line through the search page."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    try:
        page = context.new_page()
        errors = console_errors(page)
        page.goto(f"{service.url}/")
        expect(page).to_have_url(re.compile(r"/login\?next=%2F$|/login\?next=/$"))
        page.fill('#login input[name="secret"]', TOKEN)
        page.click('#login button[type="submit"]')
        expect(page).to_have_url(f"{service.url}/", timeout=UI_WAIT)
        expect(page.locator('tr[data-flow="hello"]')).to_be_visible()
        shot(page, "home")

        page.goto(f"{service.url}/flows/hello")
        expect(page.locator("#grid")).to_be_attached()
        form = page.locator('#trigger-form[data-flow="hello"]')
        who = form.locator('input[name="param.who"]')
        expect(who).to_have_value("world")  # the default, filled in
        shot(page, "grid")
        who.fill("Grace Hopper")
        page.click("#trigger")
        page.wait_for_url(re.compile(r"/runs/\d+$"), timeout=UI_WAIT)
        run_id = int(page.url.rsplit("/", 1)[1])
        page.evaluate("window.__marker = 1")
        wait_for_class(page, "#run-state", "running")  # held at its gate

        service.open_gate(run_id)
        wait_for_class(page, "#run-state", "succeeded")
        assert page.evaluate("window.__marker") == 1, "the run page was reloaded"
        expect(page.locator("#dag g.node")).to_have_count(3)
        wait_for_class(page, '#dag g.node[data-task="report"]', "succeeded")
        # the run's end refreshes the sections: a bar per attempt, no Cancel button any more
        expect(page.locator("#gantt rect.bar")).to_have_count(3, timeout=UI_WAIT)
        expect(page.locator("#cancel")).to_have_count(0, timeout=UI_WAIT)
        assert page.evaluate("window.__marker") == 1, "the run page was reloaded"
        line = page.locator("#log-tail .log-line .msg", has_text="hello Grace Hopper")
        expect(line).to_have_count(1, timeout=UI_WAIT)
        shot(page, "run")

        page.goto(f"{service.url}/logs")
        page.fill('#log-search input[name="q"]', "Hopper")
        page.locator('#log-search input[name="q"]').press("Enter")
        hit = page.locator(".log-hit", has_text="hello Grace Hopper")
        expect(hit).to_have_count(1, timeout=UI_WAIT)
        expect(hit.locator(f'a[href="/runs/{run_id}"]').first).to_be_attached()
        shot(page, "logs")
        assert not [e for e in errors if "Content Security Policy" in e], errors
    finally:
        context.close()
