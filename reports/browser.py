"""Open a report in a real headless Chromium and look at it: what each section rendered,
what the console said, and a screenshot of each section.

    python -m postern.reports.browser results/report.html --screenshots docs/

Chromium (Debian's ``chromium`` package) is driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: JSON messages ending in NUL, commands on fd 3, answers and
events on fd 4), so no websocket client or browser-automation package is needed; each run
gets a fresh profile directory and no network services of the browser's own.
"""

from __future__ import annotations

import argparse
import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--disable-default-apps", "--hide-scrollbars", "--remote-debugging-pipe")
WIDTH, HEIGHT = 1280, 900
MAX_SHOT_HEIGHT = 3000   # a tall section is cut there: the top is what a reader sees first

# What each section looks like in the DOM: its box, its heading, its figures and tables, and
# whether it only says that its results are missing.
_SECTIONS_JS = """
(ids) => ids.map(id => {
  const s = document.getElementById(id);
  if (!s) return {id, found: false};
  const r = s.getBoundingClientRect();
  const svgs = [...s.querySelectorAll('svg')];
  return {id, found: true, x: r.left + scrollX, y: r.top + scrollY, width: r.width,
          height: r.height, heading: (s.querySelector('h2') || {}).textContent || '',
          figures: svgs.length,
          drawn: svgs.filter(g => g.getBBox().width > 0 && g.getBBox().height > 0).length,
          tables: s.querySelectorAll('table').length,
          rows: s.querySelectorAll('tr').length,
          empty: !!s.querySelector(':scope > p.empty')};
})
"""


class BrowserError(Exception):
    pass


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if found := shutil.which(name):
            return found
    return None


@dataclass
class Section:
    id: str
    found: bool
    heading: str = ""
    figures: int = 0
    drawn: int = 0
    tables: int = 0
    rows: int = 0
    empty: bool = False
    box: tuple[float, float, float, float] = (0, 0, 0, 0)
    screenshot: bytes = b""


@dataclass
class PageCheck:
    sections: list[Section]
    console: list[str] = field(default_factory=list)   # errors and warnings, as text


class _Pipe:
    """The DevTools protocol over Chromium's debugging pipe."""

    def __init__(self, proc: subprocess.Popen, to_browser: int, from_browser: int) -> None:
        self.proc, self.out, self.inp = proc, to_browser, from_browser
        self.buf = b""
        self.next_id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.out, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self._read(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise BrowserError(f"{method}: {reply['error'].get('message')}")
                return reply.get("result", {})
            if "method" in reply:
                self.events.append(reply)

    def wait_event(self, method: str, timeout: float = 30.0) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            for i, e in enumerate(self.events):
                if e["method"] == method:
                    return self.events.pop(i)
            self.events.append(self._read(max(0.0, deadline - time.monotonic())))

    def _read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise BrowserError("no answer from the browser in time")
            chunk = os.read(self.inp, 1 << 20)
            if not chunk:
                raise BrowserError(f"the browser went away (exit {self.proc.poll()})")
            self.buf += chunk
        message, _, self.buf = self.buf.partition(b"\0")
        return json.loads(message)


def _high(fd: int) -> int:
    """A copy of ``fd`` numbered 10 or above, so placing the pipe on 3 and 4 cannot
    overwrite it."""
    return fcntl.fcntl(fd, fcntl.F_DUPFD, 10)


def check_page(page: str | Path, section_ids: list[str], *, screenshots: bool = True,
               browser: str | None = None, timeout: float = 60.0) -> PageCheck:
    """Load ``page`` (a local HTML file), wait for its load event, and describe each of
    ``section_ids``; console errors, warnings and uncaught exceptions are collected."""
    browser = browser or chromium_path()
    if browser is None:
        raise BrowserError("no chromium on PATH (Debian: apt-get install chromium)")
    url = Path(page).resolve().as_uri()
    to_r, to_w = os.pipe()      # we write commands, the browser reads them on fd 3
    from_r, from_w = os.pipe()  # the browser writes on fd 4, we read
    child_in, child_out = _high(to_r), _high(from_w)

    def place_pipe() -> None:
        os.dup2(child_in, 3)
        os.dup2(child_out, 4)

    with tempfile.TemporaryDirectory(prefix="postern-chromium-") as profile:
        proc = subprocess.Popen(
            [browser, *FLAGS, f"--user-data-dir={profile}", f"--window-size={WIDTH},{HEIGHT}",
             "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            pass_fds=(3, 4), preexec_fn=place_pipe)  # noqa: PLW1509 - no threads to race
        for fd in (to_r, from_w, child_in, child_out):
            os.close(fd)
        cdp = _Pipe(proc, to_w, from_r)
        try:
            return _inspect(cdp, url, section_ids, screenshots, timeout)
        finally:
            try:
                cdp.send("Browser.close", timeout=5)
            except (BrowserError, OSError):
                pass
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            os.close(to_w)
            os.close(from_r)


def _inspect(cdp: _Pipe, url: str, ids: list[str], screenshots: bool,
             timeout: float) -> PageCheck:
    target = cdp.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = cdp.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
        "sessionId"]
    for domain in ("Runtime", "Log", "Page"):
        cdp.send(f"{domain}.enable", session=session)
    cdp.send("Emulation.setDeviceMetricsOverride", {"width": WIDTH, "height": HEIGHT,
                                                    "deviceScaleFactor": 1, "mobile": False},
             session=session)
    cdp.events.clear()
    nav = cdp.send("Page.navigate", {"url": url}, session=session)
    if nav.get("errorText"):
        raise BrowserError(f"cannot open {url}: {nav['errorText']}")
    cdp.wait_event("Page.loadEventFired", timeout)
    found = cdp.send("Runtime.evaluate", {
        "expression": f"({_SECTIONS_JS})({json.dumps(ids)})", "returnByValue": True},
        session=session)
    if "exceptionDetails" in found:
        raise BrowserError(f"inspecting the page failed: {found['exceptionDetails']}")
    sections = []
    for s in found["result"]["value"]:
        section = Section(s["id"], s["found"])
        if s["found"]:
            section = Section(s["id"], True, s["heading"], s["figures"], s["drawn"],
                              s["tables"], s["rows"], s["empty"],
                              (s["x"], s["y"], s["width"], s["height"]))
            if screenshots and s["height"] > 0:
                shot = cdp.send("Page.captureScreenshot", {
                    "format": "png", "captureBeyondViewport": True,
                    "clip": {"x": s["x"], "y": s["y"], "width": s["width"],
                             "height": min(s["height"], MAX_SHOT_HEIGHT), "scale": 1}},
                    session=session)
                section.screenshot = base64.b64decode(shot["data"])
        sections.append(section)
    console = []
    for e in cdp.events:
        p = e.get("params", {})
        if e["method"] == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            console.append(f"exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif e["method"] == "Runtime.consoleAPICalled" and p.get("type") in ("error", "warning",
                                                                                "assert"):
            console.append(f"console.{p['type']}: " + " ".join(
                str(a.get("value", a.get("description", ""))) for a in p.get("args", [])))
        elif e["method"] == "Log.entryAdded" and p.get("entry", {}).get("level") in (
                "error", "warning"):
            entry = p["entry"]
            console.append(f"{entry['source']} {entry['level']}: {entry.get('text', '')}")
    return PageCheck(sections, console)


def main(argv: list[str] | None = None) -> int:
    from postern.reports.render import SECTIONS

    p = argparse.ArgumentParser(prog="python -m postern.reports.browser",
                                description=__doc__.split("\n")[0])
    p.add_argument("page", type=Path, help="the report's HTML file")
    p.add_argument("--screenshots", type=Path, help="write report-<section>.png here")
    args = p.parse_args(argv)
    check = check_page(args.page, [i for i, _ in SECTIONS], screenshots=bool(args.screenshots))
    for s in check.sections:
        state = "missing" if not s.found else ("no results" if s.empty else "rendered")
        print(f"{s.id:12} {state:10} {s.figures} figure(s), {s.tables} table(s), "
              f"{s.rows} row(s)")
        if args.screenshots and s.screenshot:
            args.screenshots.mkdir(parents=True, exist_ok=True)
            (args.screenshots / f"report-{s.id}.png").write_bytes(s.screenshot)
    for line in check.console:
        print(f"console: {line}")
    return 1 if check.console or not all(s.found for s in check.sections) else 0


if __name__ == "__main__":
    sys.exit(main())
