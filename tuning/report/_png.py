"""The report's figures as PNGs, through plotly's own exporter (kaleido) driving the system's
Chromium: the same figures as the page, for people and CI without a browser window."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import plotly.graph_objects as go

__all__ = ["write_pngs"]

log = logging.getLogger("poketune")


def write_pngs(figures: dict[str, go.Figure], folder: Path) -> tuple[dict[str, Path], str | None]:
    """``{name: figure}`` → ``{name: folder/name.png}``, or no files and the one-line reason
    (no exporter installed, no Chromium found, the browser failed)."""
    if not figures:
        return {}, None
    try:
        import kaleido
        from choreographer.errors import BrowserFailedError, ChromeNotFoundError
    except ImportError as exc:
        return {}, f"PNGs skipped: plotly's exporter (kaleido) is not installed ({exc.name})"
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / f"{name}.png" for name in figures}
    jobs = [{"fig": fig, "path": paths[name], "opts": {"width": 1100, "height": 500}} for name, fig in figures.items()]
    try:
        # one browser for all figures; plotly.js from the installed plotly, no MathJax: offline
        kaleido.write_fig_from_object_sync(jobs, kopts={"mathjax": False})
    except ChromeNotFoundError:
        return {}, "PNGs skipped: no Chromium or Chrome found (install Debian's `chromium`, or set BROWSER_PATH)"
    except (BrowserFailedError, RuntimeError, OSError, TimeoutError) as exc:
        return {}, f"PNGs skipped: the browser failed to export them ({type(exc).__name__}: {exc})"
    missing = [name for name, p in paths.items() if not p.is_file()]
    if missing:
        return {k: v for k, v in paths.items() if k not in missing}, f"PNGs not written for: {', '.join(missing)}"
    return paths, None
