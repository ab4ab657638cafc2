"""Open a page in headless Chromium over the DevTools protocol (choreographer, which plotly's
exporter already brings) and report what a user would see: console errors, uncaught
exceptions, what a script finds in the rendered page, and a screenshot.

Browser tests are required when ``CI`` is set (``.ci/run`` installs Debian's ``chromium``)
and skip with their reason elsewhere: :func:`require_chromium`.
"""

from __future__ import annotations

import asyncio
import base64
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

__all__ = ["PageVisit", "require_chromium", "visit"]

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "chrome")


def require_chromium() -> str:
    """The browser's path; skips (or fails, under CI) where there is none."""
    path = os.environ.get("BROWSER_PATH") or next((p for p in map(shutil.which, CANDIDATES) if p), None)
    if path:
        return path
    reason = "no Chromium on this machine (apt-get install chromium; .ci/run does it)"
    if os.environ.get("CI"):
        pytest.fail(f"browser tests are required in CI: {reason}")
    pytest.skip(reason)


@dataclass
class PageVisit:
    url: str
    #: console.error / console.assert messages and uncaught exceptions, as text
    errors: list[str] = field(default_factory=list)
    #: what ``probe`` (a JS expression) returned once ``ready`` was true
    probe: Any = None
    #: the final document URL (after the page's own redirects)
    location: str = ""
    screenshot: Path | None = None


async def _visit(browser_path: str, url: str, ready: str, probe: str, screenshot: Path | None,
                 timeout_s: float, width: int, height: int) -> PageVisit:
    import choreographer as choreo

    out = PageVisit(url)

    async def on_console(msg: dict[str, Any]) -> None:
        params = msg.get("params", {})
        if params.get("type") in ("error", "assert"):
            out.errors.append(" ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", [])))

    async def on_exception(msg: dict[str, Any]) -> None:
        details = msg.get("params", {}).get("exceptionDetails", {})
        out.errors.append(str(details.get("exception", {}).get("description") or details.get("text")))

    async with choreo.Browser(path=browser_path, headless=True) as browser:
        tab = await browser.create_tab("")
        await tab.send_command("Emulation.setDeviceMetricsOverride",
                               params={"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False})
        tab.subscribe("Runtime.consoleAPICalled", on_console)
        tab.subscribe("Runtime.exceptionThrown", on_exception)
        await tab.send_command("Runtime.enable")
        await tab.send_command("Page.enable")
        loaded = tab.subscribe_once("Page.loadEventFired")
        await tab.send_command("Page.navigate", params={"url": url})
        await asyncio.wait_for(loaded, timeout_s)

        async def evaluate(expression: str) -> Any:
            reply = await tab.send_command("Runtime.evaluate", params={"expression": expression, "returnByValue": True})
            result = reply.get("result", {})
            if "exceptionDetails" in result:
                raise AssertionError(f"{expression!r} threw in the page: {result['exceptionDetails']}")
            return result.get("result", {}).get("value")

        deadline = asyncio.get_running_loop().time() + timeout_s
        while not await evaluate(ready):
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{url}: {ready!r} not true after {timeout_s:.0f} s")
            await asyncio.sleep(0.25)
        out.probe = await evaluate(probe)
        out.location = str(await evaluate("document.location.href"))
        if screenshot is not None:
            shot = await tab.send_command(
                "Page.captureScreenshot", params={"format": "png", "captureBeyondViewport": True}
            )
            screenshot.parent.mkdir(parents=True, exist_ok=True)
            screenshot.write_bytes(base64.b64decode(shot["result"]["data"]))
            out.screenshot = screenshot
    return out


def visit(url: str, *, ready: str, probe: str, screenshot: Path | None = None, timeout_s: float = 60.0,
          width: int = 1280, height: int = 900) -> PageVisit:
    """Load ``url``, wait until the JS expression ``ready`` is truthy, then evaluate ``probe``
    and take the screenshot."""
    return asyncio.run(_visit(require_chromium(), url, ready, probe, screenshot, timeout_s, width, height))
