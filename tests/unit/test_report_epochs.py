"""The report shows the epochs each size saw and the pretrain stage's epoch warnings."""

from __future__ import annotations

import json
from pathlib import Path

from tlc_export.report import build_report, load_report_data


def test_epoch_warning_reaches_html_and_markdown(tmp_path: Path) -> None:
    run = tmp_path / "run"
    (run / "pretrain").mkdir(parents=True)
    warning = "2L-128H: the training split holds 600 tokens (20 rows of 32); ... about 57.3 epochs, more than 4."
    (run / "pretrain" / "results.json").write_text(json.dumps({"models": [
        {"model": "2L-128H", "epochs": 57.25, "epoch_warning": warning},
        {"model": "4L-256H", "epochs": 1.5, "epoch_warning": None},
    ]}))
    build_report(load_report_data(run), run / "report")
    html = (run / "report" / "index.html").read_text()
    md = (run / "report" / "summary.md").read_text()
    assert "class='warning epoch-warning'>2L-128H: the training split holds 600 tokens" in html
    assert html.count("epoch-warning") == 1  # the size within budget gets none
    assert "Epochs of the training split seen: 2L-128H 57.25 · 4L-256H 1.50" in html
    assert f"> **Warning:** {warning}" in md and "4L-256H 1.50" in md
