"""The README cannot go stale: every command in a ```` ```bash tested ```` block runs, in README order, in
a folder where `runs/quickstart` is a copy of the tiny run and `recipes/`, `scripts/` are the
repository's; a ```` ```yaml tested ```` block is written to the file its first line names. Blocks
without `tested` need a full run, a GPU, Docker or the network; the fence tags the README may use are
`TAGS`, and any other tag fails the first test, so a block cannot drop out of the check by accident."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from tlc_export.cli import main

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
TAGS = {"bash tested", "yaml tested", "bash", "yaml"}
# Commands a tested block must not hold: they need a full run, a GPU, Docker or the network.
TOO_BIG = re.compile(r"^(make|docker|torchrun|pip|sbatch)\b|^tlc (run|data prepare|translate)\b")


def blocks(text: str) -> list[tuple[str, str, int]]:
    """(tag, body, line of the opening fence) of every fenced block."""
    out, tag, body, start = [], None, [], 0
    for n, line in enumerate(text.splitlines(), 1):
        if line.startswith("```"):
            if tag is None:
                tag, body, start = line[3:].strip(), [], n
            else:
                out.append((tag, "\n".join(body), start))
                tag = None
        elif tag is not None:
            body.append(line)
    assert tag is None, f"README.md:{start}: unclosed fence"
    return out


def commands(body: str) -> list[str]:
    """One command per line, continuations joined, comments and blank lines dropped."""
    joined = body.replace("\\\n", " ")
    return [line.strip() for line in joined.splitlines() if shlex.split(line, comments=True)]


def test_readme_blocks_use_known_tags_and_tested_ones_are_cheap() -> None:
    found = blocks(README.read_text())
    tags = {tag for tag, _, _ in found}
    assert tags <= TAGS, f"README fence tags {sorted(tags - TAGS)} are not known; use one of {sorted(TAGS)}"
    tested = [(tag, body, n) for tag, body, n in found if tag.endswith(" tested")]
    assert sum(tag == "bash tested" for tag, _, _ in tested) >= 5 and any(tag == "yaml tested" for tag, _, _ in tested)
    for tag, body, n in tested:
        if tag == "yaml tested":
            assert re.match(r"# [\w.-]+\.yaml$", body.splitlines()[0]), f"README.md:{n}: name the file on the first line"
            continue
        for cmd in commands(body):
            assert not TOO_BIG.match(cmd), f"README.md:{n}: `{cmd}` needs a full run, a GPU or the network: untag it"


def _run(cmd: str, cwd: Path, env: dict[str, str]) -> tuple[int, str]:
    words = shlex.split(cmd, comments=True)
    shell = any(ch in cmd.split("#")[0] for ch in "|><&;$")
    if words[0] == "tlc" and not shell:  # in-process: one import of torch for the whole README
        prev = Path.cwd()
        os.chdir(cwd)
        try:
            r = CliRunner().invoke(main, words[1:])
        finally:
            os.chdir(prev)
        return r.exit_code, r.output + (repr(r.exception) if r.exception and r.exit_code else "")
    p = subprocess.run(["bash", "-c", cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


@pytest.mark.slow
def test_every_tested_readme_command_runs(tiny_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert tiny_run.exit_code == 0, tiny_run.output
    monkeypatch.setenv("TLC_HOME", str(tiny_run.home))
    work = tmp_path / "repo"
    (work / "runs").mkdir(parents=True)
    shutil.copytree(tiny_run.run_dir, work / "runs" / "quickstart", symlinks=True)
    for name in ("recipes", "scripts"):
        (work / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "PYTHONPATH": str(ROOT), "TLC_HOME": str(tiny_run.home)}
    ran = []
    for tag, body, n in blocks(README.read_text()):
        if tag == "yaml tested":
            name = body.splitlines()[0][2:].strip()
            (work / name).write_text(body + "\n")
            continue
        if tag != "bash tested":
            continue
        for cmd in commands(body):
            code, out = _run(cmd, work, env)
            assert code == 0, f"README.md:{n}: `{cmd}` exited {code}:\n{out[-3000:]}"
            ran.append((cmd, out))
    assert len(ran) >= 12
    said = {cmd.split("#")[0].strip(): out for cmd, out in ran}
    # what the commands left behind is what the README says they do
    assert (work / "data" / "task.csv").is_file() and "is valid" in said["tlc validate my-recipe.yaml"]
    assert json.loads((work / "bundle" / "tlc.json").read_text())["variant"]
    rows = [json.loads(line) for line in (work / "predictions.jsonl").read_text().splitlines()]
    assert len(rows) == 500 and all(r["label"] in ("neg", "pos") for r in rows)
    assert "accuracy" in said["tlc predict bundle --file data/task.csv --label-column label"]
    fields = (work / "fields.txt").read_text().splitlines()
    assert any(line.startswith("finetune.lr\t") for line in fields)  # full rows when piped, nothing cut
    assert "tlc run recipes/ablation-batch.yaml" in said["tlc sweep list recipes/ablation-batch.yaml"]
