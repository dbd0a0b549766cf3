"""A run's report: Figure 10 (loss vs FLOPs), Figure 8 (4-bit drop per pretraining checkpoint) and
Table 2 (finetuned accuracy at matched perplexity), from constructed finetune and compress results."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from tlc_export.predictions import SplitPredictions, save_predictions
from tlc_export.report import build_report, load_report_data
from tlc_export.report.checkpoints import checkpoint_study, table2_lines

N = 200  # test examples
SIZES = {"2L-64H": 100_000, "8L-256H": 5_000_000}


def _preds(root: Path, rel: str, correct: int) -> str:
    labels = np.arange(N) % 2
    predicted = labels.copy()
    predicted[correct:] = 1 - predicted[correct:]  # the first `correct` examples right
    save_predictions(root / rel, {"test": SplitPredictions(predicted, labels), "dev": SplitPredictions(labels, labels)})
    return rel


def _checkpoint(size: str, tag: str, fraction: float, ppl: float) -> dict:
    path = f"pretrain/{size}/checkpoint" if tag == "final" else f"pretrain/{size}/kept/{tag}"
    return {"size": size, "tag": tag, "fraction": fraction, "elapsed_s": 60 * fraction, "step": int(100 * fraction),
            "val_loss": math.log(ppl), "val_ppl": ppl, "path": path}


# (size, tag, fraction, pretraining ppl, dense correct, 4-bit correct, finetuned test correct)
TARGETS = [
    ("2L-64H", "k50", 0.5, 90.0, 150, 110, 150),
    ("2L-64H", "final", 1.0, 60.0, 160, 120, 160),
    ("8L-256H", "k50", 0.5, 55.0, 170, 166, 170),
    ("8L-256H", "final", 1.0, 30.0, 180, 176, 180),
]


def _run(root: Path) -> Path:
    pre = root / "pretrain"
    for size in SIZES:
        (pre / size).mkdir(parents=True)
        pts = [{"size": size, "elapsed_s": t, "step": 10 * t, "tokens": 1000 * t, "flops_paper": 1e12 * t * SIZES[size],
                "val_loss": 5.0 - t / 30, "val_ppl": math.exp(5.0 - t / 30)} for t in (0, 20, 40, 60)]
        (pre / size / "curves.jsonl").write_text("".join(json.dumps(p) + "\n" for p in pts))
    (pre / "results.json").write_text(json.dumps({"models": [{"model": s, "params": p} for s, p in SIZES.items()]}))
    ft_rows, variants = {"models": [], "checkpoints": []}, {"results": [], "checkpoints": []}
    for size, tag, fraction, ppl, dense, b4, acc in TARGETS:
        key = size if tag == "final" else f"{size}@{tag}"
        row = {"model": key, "size": size, "params": SIZES[size], "dev_accuracy": 0.9, "test_accuracy": acc / N,
               "pretrained_from": _checkpoint(size, tag, fraction, ppl),
               "predictions": _preds(root, f"finetune/{key}/predictions.npz", acc)}
        ft_rows["models" if tag == "final" else "checkpoints"].append(row)
        for bits, correct in ((32, dense), (4, b4)):
            v = f"{key}.s00.b{bits}"
            variants["results" if tag == "final" else "checkpoints"].append({
                "variant": v, "model": key, "params": SIZES[size], "sparsity": 0.0, "bits": bits,
                "storage_bytes": SIZES[size] * bits // 8, "dev_accuracy": 0.9, "test_accuracy": correct / N,
                "predictions": _preds(root, f"compress/{key}/variants/{v}.predictions.npz", correct)})
    match = {"target_ppl": 60.0, "worst_size": "2L-64H", "rule": "…",
             "choices": {"2L-64H": _checkpoint("2L-64H", "final", 1.0, 60.0),
                         "8L-256H": _checkpoint("8L-256H", "k50", 0.5, 55.0)},
             "first_evaluated": {"2L-64H": {"step": 900, "elapsed_s": 97.0, "fraction": 0.97, "val_ppl": 59.5},
                                 "8L-256H": {"step": 120, "elapsed_s": 31.0, "fraction": 0.31, "val_ppl": 58.0}}}
    (root / "finetune").mkdir(parents=True, exist_ok=True)
    (root / "finetune" / "results.json").write_text(json.dumps(
        {"from": "every-kept", "examples": {"train": 1000, "dev": N, "test": N}, **ft_rows, "matched_perplexity": match}))
    (root / "compress").mkdir(parents=True, exist_ok=True)
    (root / "compress" / "results.json").write_text(json.dumps(variants["results"]))
    (root / "compress" / "checkpoints.json").write_text(json.dumps(variants["checkpoints"]))
    return root


def _wilson(k: int, n: int) -> tuple[float, float]:
    """Textbook Wilson score interval, z = 1.96."""
    z, p = 1.959963984540054, k / n
    centre, half = (p + z * z / (2 * n)) / (1 + z * z / n), z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def test_fig8_rows_are_the_4bit_drops_per_checkpoint_with_paired_intervals(tmp_path: Path) -> None:
    study = checkpoint_study(_run(tmp_path))
    got = {(r["size"], r["checkpoint"]): r for r in study.fig8}
    assert set(got) == {(s, t) for s, t, *_ in TARGETS} and study.fig8_note is None
    for size, tag, fraction, _, dense, b4, _ in TARGETS:
        r = got[(size, tag)]
        assert r["drop"] == pytest.approx((dense - b4) / N) and r["fraction"] == fraction
        lo, hi = r["drop_interval"]
        assert lo <= r["drop"] <= hi and lo > 0  # every constructed drop is well above zero
    assert [r["size"] for r in study.fig8] == ["2L-64H", "2L-64H", "8L-256H", "8L-256H"]  # smallest first


def test_table2_takes_each_sizes_matched_checkpoint_with_a_wilson_interval(tmp_path: Path) -> None:
    study = checkpoint_study(_run(tmp_path))
    rows = {r["model"]: r for r in study.table2}
    assert rows["2L-64H"]["checkpoint"] == "final" and rows["2L-64H"]["finetuned_as"] == "2L-64H"
    assert rows["8L-256H"]["checkpoint"] == "k50" and rows["8L-256H"]["finetuned_as"] == "8L-256H@k50"
    assert rows["8L-256H"]["test_accuracy"] == pytest.approx(170 / N)
    assert rows["8L-256H"]["test_accuracy_ci"] == pytest.approx(_wilson(170, N), abs=1e-9)
    assert rows["8L-256H"]["pretrain_val_ppl"] == 55.0 and rows["8L-256H"]["target_ppl"] == 60.0
    assert rows["8L-256H"]["first_evaluated"]["step"] == 120


def test_table2_shows_where_the_curve_first_reached_the_target(tmp_path: Path) -> None:
    lines = table2_lines(checkpoint_study(_run(tmp_path)).table2)
    col = lines[0].index("curve first at target (% of budget)")
    by_model = {r[0]: r for r in lines[1:]}
    assert by_model["8L-256H"][col] == "31.0 (step 120, ppl 58.00)" and by_model["8L-256H"][1] == "k50"


def test_the_run_report_shows_flops_fig8_and_table2(tmp_path: Path) -> None:
    root = _run(tmp_path)
    build_report(load_report_data(root, "ckpt"), root / "report")
    html = (root / "report" / "index.html").read_text()
    for ident in ('id="flops-plot"', 'id="fig8-plot"', "id='table2-table'"):
        assert ident in html, ident
    assert (root / "report" / "loss_vs_flops.png").stat().st_size > 5_000
    assert (root / "report" / "fig8_checkpoints.png").stat().st_size > 5_000
    md = (root / "report" / "summary.md").read_text()
    assert "loss_vs_flops.png" in md and "8L-256H | k50" in md and "85.0 [" in md


def test_a_plain_run_says_why_figure_8_and_table_2_are_missing(tmp_path: Path) -> None:
    root = _run(tmp_path)
    ft = json.loads((root / "finetune" / "results.json").read_text())
    ft.update({"from": "final", "checkpoints": [], "matched_perplexity": None})
    (root / "finetune" / "results.json").write_text(json.dumps(ft))
    (root / "compress" / "checkpoints.json").unlink()
    study = checkpoint_study(root)
    assert "every-kept" in study.fig8_note and not study.table2 and "matched-perplexity" in study.table2_note
    build_report(load_report_data(root, "plain"), root / "report")
    html = (root / "report" / "index.html").read_text()
    assert 'id="flops-plot"' in html and "Not shown: one checkpoint per size" in html
