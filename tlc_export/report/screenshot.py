"""Render the report with headless Chromium: a PNG screenshot, or the DOM after scripts ran."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
INSTALL_HINT = "install it with `apt-get update && apt-get install -y chromium`"


def find_chromium() -> str | None:
    for c in CHROMIUM_CANDIDATES:
        if Path(c).is_file():
            return c
    return shutil.which("chromium")


def _run(args: list[str], html: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    exe = find_chromium()
    if exe is None:
        raise FileNotFoundError(f"Chromium not found ({', '.join(CHROMIUM_CANDIDATES)}); {INSTALL_HINT}")
    if not html.is_file():
        raise FileNotFoundError(f"{html}: no report; run `tlc run` (report stage) first")
    with tempfile.TemporaryDirectory(prefix="tlc-chromium-") as profile:
        cmd = [
            exe, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={profile}", *args, html.resolve().as_uri(),
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"chromium exited {proc.returncode}: {proc.stderr[-2000:]}")
    return proc


def screenshot(html: str | Path, png: str | Path, width: int = 1280, height: int = 4000, timeout: float = 60) -> Path:
    """Write a PNG of the rendered page (a tall window so the whole report fits)."""
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    _run([f"--screenshot={png}", f"--window-size={width},{height}"], Path(html), timeout)
    if not png.is_file():
        raise RuntimeError(f"chromium ran but wrote no screenshot to {png}")
    return png


def dump_dom(html: str | Path, timeout: float = 60) -> str:
    """The serialized DOM after the page's scripts ran."""
    return _run(["--dump-dom", "--virtual-time-budget=2000"], Path(html), timeout).stdout
