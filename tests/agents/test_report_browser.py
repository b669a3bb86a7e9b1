"""report.html in headless Chromium: tables stay inside the page, on screen and in print.

The report is built by a real (tiny) ``fundgym evaluate`` run and by hand-built records with
many policies and long names (the widest tables the report makes), then opened in Debian's
``chromium`` through the DevTools protocol over a pipe (``--remote-debugging-pipe``): no
selenium or playwright, no network port, no extra Python dependency. Each page is measured
at a desktop width, a narrow width and, with the print media emulated, at the width of an A4
page's printable area, where a table that needs a scroll bar on screen would lose its
right-hand columns on paper.

Without ``/usr/bin/chromium`` (or ``chromium`` on the PATH) the tests skip with a message
naming the package; ``.ci/run`` installs it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.agents.test_report import build_records, make_record, run_report

CHROMIUM = shutil.which("chromium") or (
    "/usr/bin/chromium" if Path("/usr/bin/chromium").is_file() else None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="needs headless Chromium: install Debian's 'chromium' package "
    "(apt-get install chromium)",
)

#: Seconds one DevTools command (a navigation, a measurement) may take before the test fails.
COMMAND_TIMEOUT_S = 60.0

#: Printable width of an A4 page with the report's 12 mm print margins, in CSS pixels
#: (96 px per inch): (210 - 2 x 12) mm / 25.4 mm per inch x 96 = 703 px.
A4_PRINTABLE_WIDTH_PX = 703

# Measures the page once every image has loaded (or failed): the width of the document, of
# each table and of the box that holds it, and each image's natural width and alt text.
MEASURE_JS = """
(async () => {
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(img => img.complete ? null :
      new Promise(done => { img.onload = img.onerror = done; })));
  const view = document.documentElement.clientWidth;
  return {
    view: view,
    page: document.documentElement.scrollWidth,
    tables: Array.from(document.querySelectorAll("table")).map(t => {
      const box = t.parentElement;
      return {
        right: t.getBoundingClientRect().right,
        width: t.getBoundingClientRect().width,
        scroll: t.scrollWidth,
        box_right: box.getBoundingClientRect().right,
        box_scroll: box.scrollWidth,
        box_client: box.clientWidth,
        box_overflow: getComputedStyle(box).overflowX,
        columns: t.rows[0].cells.length,
        last_header: t.rows[0].cells[t.rows[0].cells.length - 1].textContent,
        last_right: t.rows[0].cells[t.rows[0].cells.length - 1].getBoundingClientRect().right,
      };
    }),
    pre: Array.from(document.querySelectorAll("pre")).map(e => [e.scrollWidth, e.clientWidth]),
    images: imgs.map(img => ({
      natural: img.naturalWidth, alt: img.getAttribute("alt") || "",
      right: img.getBoundingClientRect().right,
    })),
  };
})()
"""


class DevTools:
    """A headless Chromium driven through the DevTools protocol over ``--remote-debugging-pipe``.

    Chromium reads NUL-terminated JSON commands on its file descriptor 3 and writes replies
    and events on descriptor 4. One page target is attached in flat mode; every page command
    carries its session id.
    """

    def __init__(self, executable: str, profile: Path) -> None:
        to_browser_r, to_browser_w = os.pipe()
        from_browser_r, from_browser_w = os.pipe()
        # Above 4, so that moving them onto 3 and 4 in the child cannot overwrite one another.
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10) for fd in (to_browser_r, from_browser_w)]
        for fd in (to_browser_r, from_browser_w):
            os.close(fd)

        def wire() -> None:
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self._proc = subprocess.Popen(
            [
                executable,
                "--headless",
                "--no-sandbox",  # root in CI containers; the page is our own file
                "--disable-gpu",
                "--no-first-run",
                "--remote-debugging-pipe",
                f"--user-data-dir={profile}",
                "about:blank",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            pass_fds=(3, 4),
            preexec_fn=wire,
        )
        for fd in ends:
            os.close(fd)
        self._write = to_browser_w
        self._read = from_browser_r
        self._buffer = b""
        self._next_id = 0
        self._events: list[dict[str, Any]] = []
        targets = self.send("Target.getTargets")["targetInfos"]
        pages = [t["targetId"] for t in targets if t["type"] == "page"]
        page = pages[0] if pages else self.send("Target.createTarget", {"url": "about:blank"})
        target = page if isinstance(page, str) else page["targetId"]
        self._session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        self.send("Page.enable", session=True)

    def close(self) -> None:
        """Ask the browser to quit, then end it if it has not within a few seconds."""
        with contextlib.suppress(AssertionError, OSError):
            self.send("Browser.close", timeout_s=5.0)
        try:
            self._proc.wait(timeout=5.0)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        os.close(self._write)
        os.close(self._read)

    def _message(self, deadline: float) -> dict[str, Any]:
        """The next message from the browser, waiting until ``deadline`` at most."""
        while b"\0" not in self._buffer:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self._read], [], [], max(0.0, left))
            assert ready, "Chromium did not answer in time"
            chunk = os.read(self._read, 1 << 20)
            assert chunk, f"Chromium closed the pipe (exit code {self._proc.poll()})"
            self._buffer += chunk
        raw, self._buffer = self._buffer.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(
        self,
        method: str,
        params: dict[str, Any] | None = None,
        *,
        session: bool = False,
        timeout_s: float = COMMAND_TIMEOUT_S,
    ) -> dict[str, Any]:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        command: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            command["sessionId"] = self._session
        os.write(self._write, json.dumps(command).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            message = self._message(deadline)
            if message.get("id") == self._next_id:
                assert "error" not in message, f"{method}: {message['error']}"
                result: dict[str, Any] = message["result"]
                return result
            self._events.append(message)

    def wait_event(self, method: str, timeout_s: float = COMMAND_TIMEOUT_S) -> None:
        """Wait for the event ``method`` of the page (or take it if it already came)."""
        deadline = time.monotonic() + timeout_s
        while True:
            for i, event in enumerate(self._events):
                if event.get("method") == method:
                    del self._events[i]
                    return
            self._events.append(self._message(deadline))

    def measure(self, page: Path, width_px: int, *, print_media: bool) -> dict[str, Any]:
        """Load ``page`` at ``width_px`` wide (screen or print media) and run MEASURE_JS."""
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width_px, "height": 1000, "deviceScaleFactor": 1, "mobile": False},
            session=True,
        )
        self.send(
            "Emulation.setEmulatedMedia", {"media": "print" if print_media else ""}, session=True
        )
        self._events.clear()
        self.send("Page.navigate", {"url": page.resolve().as_uri()}, session=True)
        self.wait_event("Page.loadEventFired")
        reply = self.send(
            "Runtime.evaluate",
            {"expression": MEASURE_JS, "awaitPromise": True, "returnByValue": True},
            session=True,
        )
        assert "exceptionDetails" not in reply, reply["exceptionDetails"]
        value: dict[str, Any] = reply["result"]["value"]
        return value


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevTools]:
    assert CHROMIUM is not None
    tools = DevTools(CHROMIUM, tmp_path_factory.mktemp("chromium-profile"))
    try:
        yield tools
    finally:
        tools.close()


@pytest.fixture(scope="module")
def evaluated_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html of a real two-policy, two-scenario, one-episode evaluation (a few seconds)."""
    from fundgym.agents import evaluate as ev

    work = tmp_path_factory.mktemp("evaluated")
    env_yaml = work / "env.yaml"
    env_yaml.write_text(
        yaml.safe_dump({"env": {"n_accounts": 32, "decision_minutes": 10, "horizon_minutes": 60}})
    )
    result = ev.evaluate(
        ["static:dydx", "rule"],
        ["venue_flash_wick", "oracle_manipulation"],
        1,
        work / "out",
        seed=5,
        config=env_yaml,
        workers=1,
        progress=False,
        report=True,
    )
    return result.files["report_html"]


@pytest.fixture(scope="module")
def crowded_report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """report.html with eight policies, long names, an insolvent episode and a dated crash.

    The widest tables the report makes: long policy names, and intervals in every row.
    """
    out_dir = tmp_path_factory.mktemp("crowded")
    records = build_records()
    long_names = [f"hindsight_static_variant_{i}_with_a_long_name" for i in range(5)]
    for i, name in enumerate(long_names):
        for scenario in ("flash_crash", "slow_bleed"):
            records.append(
                make_record(name, scenario, 0, socialized_usd=1e5 * (i + 1), terminated=i == 0)
            )
    starts: dict[str, str | None] = {"flash_crash": "2025-10-10T21:00:00Z"}
    return run_report(out_dir, records, start_utc=starts)["report_html"]


def assert_page_fits(measured: dict[str, Any], where: str) -> None:
    """The page never scrolls sideways, and every table's box ends inside the viewport."""
    view = measured["view"]
    assert measured["tables"], f"{where}: the page has no table"
    assert measured["page"] <= view, f"{where}: the page scrolls sideways ({measured['page']} px)"
    for i, t in enumerate(measured["tables"]):
        assert t["box_right"] <= view + 0.5, f"{where}: table {i}'s box ends past the viewport"


def assert_tables_whole(measured: dict[str, Any], where: str) -> None:
    """No table is wider than the viewport: each shows every column without scrolling."""
    view = measured["view"]
    for i, t in enumerate(measured["tables"]):
        name = f"{where}: table {i} ({t['columns']} columns)"
        assert t["right"] <= view + 0.5, f"{name} ends at {t['right']} px > {view}"
        assert t["width"] <= t["box_client"] + 0.5, f"{name} is wider than its box"
        assert t["box_scroll"] <= t["box_client"] + 0.5, f"{name} hides columns behind a scroll"
        assert t["last_right"] <= view + 0.5, f"{name} loses its last column {t['last_header']!r}"


def assert_images_load(measured: dict[str, Any], where: str, n_images: int) -> None:
    """Every image decoded (naturalWidth > 0), fits the page and has a real alt text."""
    assert len(measured["images"]) == n_images, where
    for i, img in enumerate(measured["images"]):
        assert img["natural"] > 0, f"{where}: image {i} did not load"
        assert len(img["alt"]) > 80, f"{where}: image {i} has no meaningful alt text"
        assert img["right"] <= measured["view"] + 0.5, f"{where}: image {i} is wider than the page"


def report_page(which: str, evaluated_report: Path, crowded_report: Path) -> tuple[Path, int]:
    """The page and how many images it embeds."""
    page = evaluated_report if which == "evaluated" else crowded_report
    return page, page.read_text().count("<img ")


@pytest.mark.parametrize("which", ["evaluated", "crowded"])
def test_tables_fit_a_desktop_screen_and_images_load(
    browser: DevTools, evaluated_report: Path, crowded_report: Path, which: str
) -> None:
    page, n_images = report_page(which, evaluated_report, crowded_report)
    measured = browser.measure(page, 1280, print_media=False)
    assert_page_fits(measured, f"{which} at 1280 px")
    assert_tables_whole(measured, f"{which} at 1280 px")
    assert_images_load(measured, f"{which} at 1280 px", n_images)


@pytest.mark.parametrize("which", ["evaluated", "crowded"])
def test_on_a_narrow_screen_tables_scroll_inside_the_page(
    browser: DevTools, evaluated_report: Path, crowded_report: Path, which: str
) -> None:
    page, n_images = report_page(which, evaluated_report, crowded_report)
    measured = browser.measure(page, 480, print_media=False)
    assert_page_fits(measured, f"{which} at 480 px")
    # A table too wide for a phone scrolls inside its own box, not the page.
    assert any(t["width"] > t["box_client"] for t in measured["tables"])
    assert all(t["box_overflow"] == "auto" for t in measured["tables"])
    assert_images_load(measured, f"{which} at 480 px", n_images)


@pytest.mark.parametrize("which", ["evaluated", "crowded"])
def test_print_keeps_every_column(
    browser: DevTools, evaluated_report: Path, crowded_report: Path, which: str
) -> None:
    page, n_images = report_page(which, evaluated_report, crowded_report)
    measured = browser.measure(page, A4_PRINTABLE_WIDTH_PX, print_media=True)
    where = f"{which} printed on A4"
    assert_page_fits(measured, where)
    assert_tables_whole(measured, where)
    # The command line is wrapped on paper, not cut off.
    assert all(scroll <= client + 0.5 for scroll, client in measured["pre"]), where
    assert_images_load(measured, where, n_images)
