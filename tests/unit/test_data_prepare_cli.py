"""`tlc data prepare` writes the token files once; later runs (any `data.workers`) find them up to date."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from tlc_export.cli import main

RECIPE = """\
data: {sources: [{kind: text, path: 'corpus/*.txt'}], max_seq_len: 16, min_val_documents: 3}
tokenizer: {vocab_size: 300}
models: {sizes: [{layers: 1, hidden: 32}]}
pretrain: {time_budget_s: 1}
"""


def test_prepare_once_then_up_to_date_for_any_worker_count(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TLC_HOME", str(tmp_path / "home"))
    (tmp_path / "corpus").mkdir()
    for i in range(30):
        (tmp_path / "corpus" / f"{i}.txt").write_text(f"paragraph {i} " + "about the mill and the river " * (i % 4 + 2))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(RECIPE)
    run = tmp_path / "shared" / "run"
    prep = CliRunner().invoke(main, ["data", "prepare", str(recipe), "--run-dir", str(run), "--workers", "1"])
    assert prep.exit_code == 0, prep.output
    assert "30 file(s)" in prep.output and (run / "data" / "tokens" / "train.bin").is_file()
    before = (run / "data" / "tokens" / "train.bin").stat().st_mtime_ns

    recipe.write_text(RECIPE.replace("min_val_documents: 3}", "min_val_documents: 3, workers: 2}"))
    again = CliRunner().invoke(main, ["run", str(recipe), "--run-dir", str(run), "--until", "data"])
    assert again.exit_code == 0, again.output
    assert "data: up to date" in again.output  # workers changes speed, never the files: same cache key
    assert (run / "data" / "tokens" / "train.bin").stat().st_mtime_ns == before

    only = CliRunner().invoke(main, ["data", "prepare", str(recipe), "--fetch-only", "--run-dir", str(tmp_path / "x")])
    assert only.exit_code == 0 and not (tmp_path / "x").exists()
