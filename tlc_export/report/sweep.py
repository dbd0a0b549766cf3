"""The sweep report: every point of a sweep that has results, merged into `<parent>/report/`.

- a table of the points (swept values, stages done, final validation loss per size);
- the points' learning curves overlaid, per size (one line per point: the paper's Figures 13 and
  14) and per point (one line per size), against wall-clock seconds, steps and FLOPs (Figure 10);
- Figure 8 (accuracy drop at 4 bits vs pretraining checkpoint) and Table 2 (finetuned accuracy
  at matched pretraining perplexity) for every point that has them;
- the claims card rows the sweep measures: 6 "model size beats batch size in wall-clock" and 7
  "larger models overfit small data" (`report.claims.sweep`).

It reads the points' run directories only, so it can be written while other points are still
running (each point's job rewrites it when it finishes), and it writes nothing half-done.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console

from tlc_export import atomic, integrity
from tlc_export.atomic import read_jsonl
from tlc_export.report.checkpoints import Study, checkpoint_study, fig8_png, table2_lines
from tlc_export.report.claims import card_html, card_markdown, write_card
from tlc_export.report.claims.build import replica_curves
from tlc_export.report.claims.card import Card
from tlc_export.report.claims.sizes import Size, order_sizes
from tlc_export.report.claims.sweep import PointRun, claim_overfit, claim_size_vs_batch
from tlc_export.report.curve_plots import overlay_png
from tlc_export.report.html import esc, img
from tlc_export.rundir import RESOLVED_RECIPE, RunDir
from tlc_export.store import PLAN_FILE, POINTS_DIR

STAGES = ("data", "pretrain", "finetune", "compress", "export", "bench", "report")
_FILES = {"curves-by-size": "sweep_curves_by_size.png", "curves-by-point": "sweep_curves_by_point.png",
          "fig8": "sweep_fig8.png"}


def _plan(parent: Path) -> dict[str, Any]:
    return json.loads((parent / PLAN_FILE).read_text())


def point_statuses(parent: str | Path) -> list[dict[str, Any]]:
    """Per point of the plan: id, label, folder and each stage's status in its manifest ({} when not started)."""
    root = Path(parent)
    out = []
    for p in _plan(root)["points"]:
        folder = root / POINTS_DIR / p["id"]
        stages = {}
        if (folder / "manifest.json").is_file():
            for name, rec in RunDir(folder).records().items():
                stages[name] = {"status": rec.status, "hit": bool(rec.shared and rec.shared.get("hit"))}
        out.append({**p, "dir": folder, "stages": stages})
    return out


@dataclass
class PointResults:
    """One point's results as the sweep report uses them."""

    index: int
    id: str
    label: str
    values: dict[str, Any]
    dir: Path
    stages: dict[str, dict[str, Any]]
    recipe: dict[str, Any] = field(default_factory=dict)
    pretrain: dict[str, Any] = field(default_factory=dict)
    curves: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    sizes: list[Size] = field(default_factory=list)
    study: Study | None = None

    @property
    def pretrained(self) -> bool:
        return self.stages.get("pretrain", {}).get("status") == "done" and bool(self.curves)


def _load_point(p: dict[str, Any]) -> PointResults:
    r = PointResults(p["index"], p["id"], p["label"], p["values"], Path(p["dir"]), p["stages"])
    rec = r.dir / RESOLVED_RECIPE
    if rec.is_file():
        r.recipe = yaml.safe_load(rec.read_text()) or {}
    if r.stages.get("pretrain", {}).get("status") == "done":
        res = r.dir / "pretrain" / "results.json"
        r.pretrain = json.loads(res.read_text()) if res.is_file() else {}
        for row in r.pretrain.get("models", []):
            pts = read_jsonl(r.dir / "pretrain" / str(row["model"]) / "curves.jsonl")
            if pts:
                r.curves[str(row["model"])] = pts
        r.sizes = order_sizes(list(r.curves), r.pretrain.get("models", []))
    if r.stages.get("finetune", {}).get("status") == "done":
        r.study = checkpoint_study(r.dir)
    return r


def _point_run(r: PointResults) -> PointRun:
    pre, data = r.recipe.get("pretrain") or {}, r.recipe.get("data") or {}
    rows = {str(x["model"]): x for x in r.pretrain.get("models", [])}
    replicas = [{s: pts[-1] for s, pts in c.items()} for c in replica_curves(r.dir / "pretrain")]
    return PointRun(r.id, r.values, int(pre.get("batch_size") or 0), float(pre.get("lr") or 0.0),
                    float(data.get("fraction", 1.0)), r.sizes, {s: pts[-1] for s, pts in r.curves.items()},
                    {s: float(x["epochs"]) for s, x in rows.items() if x.get("epochs") is not None}, replicas)


def _final_loss(r: PointResults, size: str) -> str:
    pts = r.curves.get(size)
    if not pts or pts[-1].get("val_loss") is None:
        return "-"
    return f"{pts[-1]['val_loss']:.3f}"


def build_sweep_report(parent: str | Path) -> dict[str, Any]:
    """Everything the sweep report shows, computed from the points' run directories."""
    root = Path(parent)
    plan = _plan(root)
    points = [_load_point(p) for p in point_statuses(root)]
    done = [p for p in points if p.pretrained]
    sizes = order_sizes([s for p in done for s in p.curves], *[p.pretrain.get("models", []) for p in done])
    by_size = {s.name: {p.id: p.curves[s.name] for p in done if s.name in p.curves} for s in sizes}
    by_point = {f"{p.id}": p.curves for p in done}
    runs = [_point_run(p) for p in done]
    card = Card(run=str(plan.get("name", root.name)), run_dir=str(root),
                claims=[claim_size_vs_batch(runs), claim_overfit(runs)])
    fig8 = {f"{p.id}": p.study.fig8 for p in points if p.study is not None and p.study.fig8}
    return {"plan": plan, "points": points, "sizes": sizes, "card": card,
            "figures": {
                "curves-by-size": overlay_png(by_size, "Validation loss per size, one line per sweep point "
                                              "(Figures 10, 13, 14)", "point"),
                "curves-by-point": overlay_png(by_point, "Validation loss per sweep point, one line per size",
                                               "model"),
                "fig8": fig8_png(fig8),
            }}


def write_sweep_report(parent: str | Path, console: Console | None = None) -> dict[str, Any]:
    """Write `<parent>/report/`: index.html, summary.md, claims.json and the PNGs."""
    root = Path(parent)
    out = root / "report"
    rep = build_sweep_report(root)
    images = {}
    for key, png in rep["figures"].items():
        if png:
            atomic.write_bytes(out / _FILES[key], png)
            images[key] = _FILES[key]
    write_card(rep["card"], out)
    atomic.write_text(out / "index.html", _html(rep))
    atomic.write_text(out / "summary.md", _markdown(rep, images))
    integrity.record_stage(out, "report")  # the sweep report is no runner stage: its files are recorded here
    n_done = sum(1 for p in rep["points"] if p.pretrained)
    if console is not None:
        console.print(f"sweep report ({n_done} of {len(rep['points'])} point(s) with results): {out / 'index.html'}")
    return {"index": str(out / "index.html"), "points": len(rep["points"]), "with_results": n_done,
            "claims_status": {str(c.number): c.status for c in rep["card"].claims}}


def _point_rows(rep: dict[str, Any]) -> tuple[list[str], list[list[str]]]:
    sizes = [s.name for s in rep["sizes"]]
    head = ["point", "values", "stages done", *[f"{s} final val loss" for s in sizes]]
    rows = []
    for p in rep["points"]:
        st = [n for n in STAGES if p.stages.get(n, {}).get("status") == "done"]
        shared = [n for n in STAGES if p.stages.get(n, {}).get("hit")]
        done_txt = (", ".join(st) or "not started") + (f" (shared: {', '.join(shared)})" if shared else "")
        rows.append([p.id, p.label, done_txt, *[_final_loss(p, s) for s in sizes]])
    return head, rows


def _html_table(head: list[str], rows: list[list[str]], ident: str) -> str:
    h = "".join(f"<th class='l'>{esc(x)}</th>" for x in head)
    b = "".join("<tr>" + "".join(f"<td class='l'>{esc(c)}</td>" for c in r) + "</tr>" for r in rows)
    return f"<div class='scroll'><table id='{ident}'><thead><tr>{h}</tr></thead><tbody>{b}</tbody></table></div>"


def _table2_sections(rep: dict[str, Any]) -> list[tuple[str, list[list[str]] | None, str | None]]:
    out = []
    for p in rep["points"]:
        if p.study is None:
            continue
        target = (p.study.match or {}).get("target_ppl")
        title = f"{p.id} ({p.label})" + (f" — target perplexity {target:.2f}" if target else "")
        out.append((title, table2_lines(p.study.table2) if p.study.table2 else None, p.study.table2_note))
    return out


def _html(rep: dict[str, Any]) -> str:
    from tlc_export.report.html import CSS, JS

    plan, figs = rep["plan"], rep["figures"]
    head, rows = _point_rows(rep)
    n_done = sum(1 for p in rep["points"] if p.pretrained)
    fields = ", ".join(f"{k}: {v}" for k, v in plan["fields"].items())
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>tlc sweep — {esc(plan['name'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Sweep — {esc(plan['name'])}</h1>",
        f"<p class='note'>mode {esc(plan['mode'])} over {esc(fields)}; {n_done} of {len(rep['points'])} point(s) "
        "have pretraining results (this report merges whatever has finished).</p>",
        card_html(rep["card"]),
        "<h2 id='points'>Points</h2>", _html_table(head, rows, "points-table"),
        "<h2>Learning curves per size, one line per point (Figures 13, 14; FLOPs: Figure 10)</h2>",
        img(figs["curves-by-size"], "curves-by-size", "overlaid learning curves per size"),
        "<h2>Learning curves per point, one line per size</h2>",
        img(figs["curves-by-point"], "curves-by-point", "learning curves per point"),
        "<h2 id='fig8'>Compressibility vs convergence (Figure 8)</h2>",
        img(figs["fig8"], "fig8-plot", "accuracy drop at 4 bits vs pretraining checkpoint"),
        *[f"<p class='note'>{esc(p.id)}: {esc(p.study.fig8_note)}</p>" for p in rep["points"]
          if p.study is not None and p.study.fig8_note],
        "<h2 id='table2'>Finetuning at matched pretraining perplexity (Table 2)</h2>",
    ]
    for title, lines, note in _table2_sections(rep):
        parts.append(f"<h3>{esc(title)}</h3>")
        if lines:
            parts.append(_html_table(lines[0], lines[1:], "table2-" + title.split(" ")[0]))
        if note:
            parts.append(f"<p class='note'>{esc(note)}</p>")
    parts.append(f"<script>{JS}</script></body></html>")
    return "\n".join(parts)


def _md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    def cell(x: str) -> str:
        return str(x).replace("|", "\\|")

    return ["| " + " | ".join(map(cell, head)) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(map(cell, r)) + " |" for r in rows]]


def _markdown(rep: dict[str, Any], images: dict[str, str]) -> str:
    plan = rep["plan"]
    head, rows = _point_rows(rep)
    lines = [f"# Sweep — {plan['name']}\n", card_markdown(rep["card"]), "## Points\n", *_md_table(head, rows), ""]
    for key, title in (("curves-by-size", "Learning curves per size (Figures 10, 13, 14)"),
                       ("curves-by-point", "Learning curves per point"), ("fig8", "Figure 8")):
        if key in images:
            lines += [f"## {title}\n", f"![{title}]({images[key]})\n"]
    lines.append("## Table 2: finetuning at matched pretraining perplexity\n")
    for title, tl, note in _table2_sections(rep):
        lines.append(f"### {title}\n")
        if tl:
            lines += [*_md_table(tl[0], tl[1:]), ""]
        if note:
            lines.append(f"{note}\n")
    return "\n".join(lines) + "\n"
