"""The card as an HTML section, a Markdown section and a console table; all print the same cells."""

from __future__ import annotations

import json
from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from tlc_export.report.claims.card import Card, Claim
from tlc_export.report.claims.rules import FAILS, HOLDS, MULTIPLICITY, NOISE, NOT_MEASURED
from tlc_export.report.html import esc

TITLE = "Claims of the paper, checked on this run"
INTRO = ("Each row is a claim of Train Large, Then Compress, the evidence this run measured, d = the deciding "
         "difference (largest − smallest size) with its 95 % interval, and the status the rule gives. "
         "{split} accuracies report; dev only selects. A status decided from one pretraining seed is labelled "
         "\"one seed: indicative\". " + MULTIPLICITY + " Machine-readable: claims.json.")
_STYLE = {HOLDS: "green", FAILS: "red", NOISE: "yellow", NOT_MEASURED: "dim"}
CSS = """<style>
#claims-table{width:100%}
#claims-table td{white-space:normal;text-align:left;vertical-align:top}
#claims-table td.claim{min-width:12rem;max-width:18rem} #claims-table td.fig{white-space:nowrap}
#claims-table td.wrap{min-width:22rem} #claims-table td.d{white-space:nowrap;text-align:right}
#claims-table td.status{font-weight:600;max-width:15rem} #claims-table .why{font-weight:400;font-size:.75rem;color:#777}
td.status.holds{color:#2d7d2d} td.status.fails{color:#b03a2e} td.status.noise{color:#9a6a00}
td.status.unmeasured{color:#777} td.unstable{color:#b03a2e;font-weight:600}
#claims-table pre{white-space:pre-wrap;font-size:.75rem;max-height:20rem;overflow:auto}
</style>"""
_PAGE_CSS = ("body{font-family:system-ui,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}"
             "table{border-collapse:collapse;font-size:.85rem}th,td{border:1px solid #ddd;padding:.3rem .5rem;"
             "vertical-align:top}th{background:#f5f5f5;text-align:left}.note{color:#666;font-size:.85rem}")
_CLASS = {HOLDS: "holds", FAILS: "fails", NOISE: "noise", NOT_MEASURED: "unmeasured"}


def num(x: float | None) -> str:
    return "-" if x is None else f"{x:+.4g}"


def interval_text(c: Claim) -> str:
    """`d [lo, hi]`, `d (no interval)` or `-`: the same string in every view."""
    if c.estimate is None:
        return "-"
    unit = f" {c.unit}" if c.unit else ""
    if c.interval is None:
        return f"{num(c.estimate)}{unit} (no interval)"
    return f"{num(c.estimate)} [{num(c.interval[0])}, {num(c.interval[1])}]{unit}"


def _details(c: Claim) -> str:
    notes = "".join(f"<p>{esc(n)}</p>" for n in c.notes)
    method = f"<p><b>Interval:</b> {esc(c.interval_method)}</p>" if c.interval_method else ""
    metric = f"<p><b>d:</b> {esc(c.metric)}</p>" if c.metric else ""
    parts = "".join(f"<p><b>{esc(p.name)}:</b> {esc(p.status if p.status != NOT_MEASURED else f'not measured ({p.reason})')}"
                    f" — {esc(p.evidence)}</p>" for p in c.parts)
    nums = json.dumps(c.numbers, indent=1, default=str)
    return (f"<details><summary>rule, inputs and numbers</summary><p><b>Rule:</b> {esc(c.rule)}</p>{metric}{method}"
            f"{parts}{notes}<p><b>Inputs:</b> {esc(', '.join(c.sources))}</p><pre>{esc(nums)}</pre></details>")


def _status_html(c: Claim) -> str:
    """The status in bold, a "not measured" reason in small print; the text reads as `status_text`."""
    if c.status != NOT_MEASURED:
        return esc(c.status_label)
    return f"{esc(c.status)} <span class='why'>({esc(c.reason)})</span>"


def card_html(card: Card) -> str:
    rows = []
    for c in card.claims:
        lo, hi = c.interval if c.interval else (None, None)
        rows.append(
            f'<tr data-claim="{c.number}" data-status="{esc(c.status)}" data-estimate="{esc(c.estimate)}" '
            f'data-lo="{esc(lo)}" data-hi="{esc(hi)}"><td>{c.number}</td><td class="claim">{esc(c.claim)}</td>'
            f'<td class="fig">{esc(c.figure)}</td><td class="status {_CLASS[c.status]}">{_status_html(c)}</td>'
            f'<td class="d">{esc(interval_text(c))}</td><td class="wrap">{esc(c.evidence)}{_details(c)}</td></tr>')
    head = "".join(f"<th class='l'>{h}</th>" for h in ("#", "claim", "paper", "status", "d [95 % interval]", "evidence"))
    return (f"{CSS}<h2 id='claims'>{TITLE}</h2><p class='note'>{esc(INTRO.format(split=card.split.capitalize()))}</p>"
            f"<div class='scroll'><table id='claims-table'><thead><tr>{head}</tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table></div>")


def _md(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def card_markdown(card: Card) -> str:
    lines = [f"## {TITLE}\n", INTRO.format(split=card.split.capitalize()) + "\n",
             "| # | claim | paper | status | d [95 % interval] | evidence |", "|---|---|---|---|---|---|"]
    for c in card.claims:
        lines.append(f"| {c.number} | {_md(c.claim)} | {_md(c.figure)} | **{_md(c.status_text)}** | "
                     f"{_md(interval_text(c))} | {_md(c.evidence)} |")
    lines.append("\nRules:\n")
    lines += [f"{c.number}. {_md(c.rule)}" + (f" Interval: {_md(c.interval_method)}." if c.interval_method else "")
              for c in card.claims]
    return "\n".join(lines) + "\n"


def card_table(card: Card) -> Group:
    """The card for the console: a compact table, then why each unmeasured claim was not measured."""
    t = Table(title=f"{TITLE} ({card.run})", show_lines=True)
    for col, kw in (("#", {"justify": "right"}), ("claim", {"ratio": 3}), ("paper", {"ratio": 1}),
                    ("status", {"ratio": 1}), ("d [95 % interval]", {"ratio": 1})):
        t.add_column(col, overflow="fold", **kw)
    for c in card.claims:
        style = _STYLE[c.status]
        t.add_row(str(c.number), c.claim, c.figure, f"[{style}]{c.status_label}[/{style}]", interval_text(c))
    why = [Text(f"{c.number}. not measured: {c.reason}", style="dim") for c in card.claims if c.status == NOT_MEASURED]
    return Group(t, *why, Text(MULTIPLICITY, style="dim"))


def compare_table(cmp: dict[str, Any]) -> Table:
    t = Table(title="Claims across runs", show_lines=True)
    t.add_column("#", justify="right")
    t.add_column("claim", overflow="fold", ratio=2)
    for r in cmp["runs"]:
        t.add_column(r["label"], overflow="fold", ratio=1)
    t.add_column("across runs", overflow="fold")
    pooled = any(row.get("pooled") for row in cmp["claims"])
    if pooled:
        t.add_column("pooled over seeds", overflow="fold")
    for row in cmp["claims"]:
        cells = []
        for cell in row["runs"] + ([row.get("pooled") or {"status": "-", "d": "-"}] if pooled else []):
            style = _STYLE.get(cell["status"], "white")
            label = cell.get("status_label") or cell["status"]
            cells.append(f"[{style}]{label}[/{style}]" + (f"\n{cell['d']}" if cell["d"] != "-" else ""))
        stab = row["stability"]
        stab_cell = f"[red]{stab}[/red]" if stab == "unstable" else stab
        t.add_row(str(row["number"]), row["claim"], *(cells[:len(row["runs"])] + [stab_cell] + cells[len(row["runs"]):]))
    if cmp.get("pooled_note"):
        t.caption = cmp["pooled_note"]
    return t


def compare_markdown(cmp: dict[str, Any]) -> str:
    runs = cmp["runs"]
    lines = ["# Claims across runs\n", "Runs: " + "; ".join(f"`{r['label']}` = {r['run_dir']}" for r in runs) + "\n",
             "| # | claim | " + " | ".join(_md(r["label"]) for r in runs) + " | across runs |",
             "|---|---|" + "---|" * len(runs) + "---|"]
    for row in cmp["claims"]:
        cells = [f"{_md(c['status_text'])}; d {_md(c['d'])}" for c in row["runs"]]
        stab = f"**{row['stability']}**" if row["stability"] == "unstable" else row["stability"]
        lines.append(f"| {row['number']} | {_md(row['claim'])} | " + " | ".join(cells) + f" | {stab} |")
    pooled = [r for r in cmp["claims"] if r.get("pooled")]
    if pooled:
        lines.append("\n| # | pooled over every run's seeds | d [95 % interval] |\n|---|---|---|")
        lines += [f"| {r['number']} | **{_md(r['pooled']['status_text'])}** | {_md(r['pooled']['d'])} |" for r in pooled]
    if cmp.get("pooled_note"):
        lines.append(f"\n{_md(cmp['pooled_note'])}")
    lines.append(f"\n{cmp['rule']}\n")
    return "\n".join(lines)


def compare_html(cmp: dict[str, Any]) -> str:
    runs = cmp["runs"]
    head = "<th>#</th><th class='l'>claim</th>" + "".join(f"<th class='l'>{esc(r['label'])}</th>" for r in runs) + \
        "<th class='l'>across runs</th>"
    body = []
    for row in cmp["claims"]:
        cells = "".join(f"<td class='status {_CLASS.get(c['status'], '')}' data-status='{esc(c['status'])}'>"
                        f"{esc(c['status_text'])}<br><span class='note'>d {esc(c['d'])}</span></td>" for c in row["runs"])
        stab = esc(row["stability"])
        body.append(f"<tr data-claim='{row['number']}' data-stability='{stab}'><td>{row['number']}</td>"
                    f"<td class='claim'>{esc(row['claim'])}</td>{cells}"
                    f"<td class='{'unstable' if row['stability'] == 'unstable' else 'l'}'>{stab}</td></tr>")
    runs_txt = "".join(f"<li><b>{esc(r['label'])}</b>: {esc(r['run_dir'])}</li>" for r in runs)
    pooled = [r for r in cmp["claims"] if r.get("pooled")]
    pooled_html = ""
    if pooled:
        pooled_html = ("<h2>Pooled over every run's pretraining seeds</h2><table id='claims-pooled'><tbody>" + "".join(
            f"<tr data-claim='{r['number']}' data-status='{esc(r['pooled']['status'])}'><td>{r['number']}</td>"
            f"<td class='claim'>{esc(r['claim'])}</td><td class='status {_CLASS.get(r['pooled']['status'], '')}'>"
            f"{esc(r['pooled']['status_text'])}</td><td class='d'>{esc(r['pooled']['d'])}</td></tr>" for r in pooled)
            + "</tbody></table>")
    if cmp.get("pooled_note"):
        pooled_html += f"<p class='note'>{esc(cmp['pooled_note'])}</p>"
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>tlc — claims across runs</title>"
            f"<style>{_PAGE_CSS}</style>{CSS}</head><body><h1>Claims across runs</h1><ul>{runs_txt}</ul>"
            f"<div class='scroll'><table id='claims-table'><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody>"
            f"</table></div>{pooled_html}<p class='note'>{esc(cmp['rule'])}</p></body></html>")
