"""Render RUN_DIR/report/index.html with headless Chromium into OUT.png.

usage: python scripts/report_screenshot.py RUN_DIR OUT.png [--width 1280] [--height 4000]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tlc_export.report.screenshot import screenshot


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=4000)
    a = ap.parse_args(argv)
    try:
        png = screenshot(a.run_dir / "report" / "index.html", a.out, a.width, a.height)
    except (FileNotFoundError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(png)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
