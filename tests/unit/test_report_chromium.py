"""The report renders in headless Chromium: frontier image and every variant row are in the DOM after JS ran."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tlc_export.report import build_report, load_report_data
from tlc_export.report.screenshot import dump_dom, find_chromium

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="Chromium not installed (/usr/bin/chromium); apt-get install -y chromium"
)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from test_report import fake_run  # same folder; pytest puts it on sys.path

    root = fake_run(tmp_path_factory.mktemp("chromium") / "run")
    build_report(load_report_data(root, "chromium"), root / "report")
    return root


def test_dom_after_scripts_has_frontier_and_every_variant(run: Path) -> None:
    import json

    dom = dump_dom(run / "report" / "index.html")
    assert 'data-ready="1"' in dom  # the inline script ran
    assert 'id="frontier-plot"' in dom and "data:image/png;base64," in dom
    for v in json.loads((run / "compress" / "results.json").read_text()):
        assert f'data-variant="{v["variant"]}"' in dom


def test_screenshot_script_writes_a_png(run: Path, tmp_path: Path) -> None:
    script = Path(__file__).resolve().parents[2] / "scripts" / "report_screenshot.py"
    out = tmp_path / "shot.png"
    proc = subprocess.run([sys.executable, str(script), str(run), str(out), "--height", "1200"],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20_000
