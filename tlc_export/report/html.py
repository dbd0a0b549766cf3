"""index.html: one self-contained file (PNG figures as data URIs, inline CSS and JS, no network)."""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from typing import Any

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1200px;color:#222;padding:0 1rem}
h1{margin-bottom:.2rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
.verdict{font-size:1.1rem;padding:.8rem 1rem;border-radius:6px;background:#f3f6fb;border-left:5px solid #4a78c2}
.verdict.won{background:#eef8ee;border-color:#3c9a3c} .verdict.lost{background:#fbf1ee;border-color:#c2664a}
.verdict.noise{background:#fbf8ea;border-color:#c9a227}
.warn{padding:.6rem 1rem;border-radius:6px;background:#fdecea;border-left:5px solid #c62828;color:#7a1a1a}
.splits{padding:.5rem 1rem;background:#f7f7f7;border-radius:6px;font-size:.92rem}
table{border-collapse:collapse;font-size:.82rem;margin:.5rem 0}
th,td{border:1px solid #ddd;padding:.25rem .45rem;text-align:right;white-space:nowrap}
th{background:#f5f5f5;position:sticky;top:0} td.l,th.l{text-align:left}
table.sortable th{cursor:pointer} table.sortable th[data-dir=asc]::after{content:" ▲"} table.sortable th[data-dir=desc]::after{content:" ▼"}
tr.unavailable td{color:#999} tr.failed td{color:#b33}
img{max-width:100%;border:1px solid #eee} .scroll{overflow-x:auto;max-height:80vh}
.note{color:#666;font-size:.85rem}
.warning{background:#fff6e0;border-left:5px solid #d9a400;padding:.5rem .8rem;border-radius:4px}
"""

# Click a header to sort by it; numbers sort numerically, empty cells last. Marks <body data-ready>.
JS = """
(function(){
  function key(td){var t=td?td.getAttribute('data-v')||td.textContent.trim():'';var n=parseFloat(t);
    return t===''||t==='-'?null:(isNaN(n)||!/^[-+0-9.eE]+$/.test(t)?t.toLowerCase():n);}
  document.querySelectorAll('table.sortable').forEach(function(tb){
    tb.querySelectorAll('th').forEach(function(th,i){
      th.addEventListener('click',function(){
        var dir=th.getAttribute('data-dir')==='asc'?'desc':'asc';
        tb.querySelectorAll('th').forEach(function(o){o.removeAttribute('data-dir');});
        th.setAttribute('data-dir',dir);
        var body=tb.tBodies[0],rows=Array.prototype.slice.call(body.rows);
        rows.sort(function(a,b){var x=key(a.cells[i]),y=key(b.cells[i]);
          if(x===null)return 1; if(y===null)return -1;
          if(typeof x!==typeof y){x=String(x);y=String(y);}
          var c=x<y?-1:x>y?1:0; return dir==='asc'?c:-c;});
        rows.forEach(function(r){body.appendChild(r);});
      });
    });
  });
  document.body.setAttribute('data-ready','1');
})();
"""


def esc(x: Any) -> str:
    return html.escape("" if x is None else str(x))


def img(png: bytes | None, ident: str, alt: str) -> str:
    if not png:
        return f'<p class="note">({esc(alt)}: no data in this run)</p>'
    b64 = base64.b64encode(png).decode("ascii")
    return f'<img id="{esc(ident)}" alt="{esc(alt)}" src="data:image/png;base64,{b64}">'


def fmt(v: Any, kind: str = "") -> str:
    if v is None or v == "":
        return "-"
    if kind == "pct" and isinstance(v, (int, float)):
        return f"{100 * v:.2f}"
    if kind == "mb" and isinstance(v, (int, float)):
        return f"{v / 1e6:.3f}"
    if kind == "ci" and isinstance(v, (list, tuple)) and len(v) == 2:
        return f"[{100 * v[0]:.1f}, {100 * v[1]:.1f}]"
    # A score already on its own scale (BLEU, chrF: 0-100) and its interval, not a fraction.
    if kind == "pts" and isinstance(v, (int, float)):
        return f"{v:.2f}"
    if kind == "ci_pts" and isinstance(v, (list, tuple)) and len(v) == 2:
        return f"[{v[0]:.2f}, {v[1]:.2f}]"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def table(
    rows: Sequence[dict[str, Any]],
    columns: Sequence[tuple[str, str, str]],  # (key, header, kind)
    ident: str,
    sortable: bool = False,
    row_attr: str | None = None,
) -> str:
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f'<th class="{"l" if k == "l" else ""}">{esc(h)}</th>' for _, h, k in columns)
    body = []
    for r in rows:
        attrs = f' data-variant="{esc(r.get(row_attr))}"' if row_attr else ""
        st = r.get("status")
        if st in ("unavailable", "failed"):
            attrs += f' class="{st}"'
        cells = []
        for key, _, kind in columns:
            v = r.get(key)
            raw = "" if v is None else (str(v) if not isinstance(v, float) else repr(v))
            cells.append(f'<td class="{"l" if kind == "l" else ""}" data-v="{esc(raw)}">{esc(fmt(v, kind))}</td>')
        body.append(f"<tr{attrs}>{''.join(cells)}</tr>")
    return (f'<div class="scroll"><table id="{esc(ident)}"{cls}><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>")


VARIANT_COLUMNS = [
    ("variant", "variant", "l"), ("model", "model", "l"), ("compression", "compression", "l"),
    ("params", "params", ""), ("sparsity", "sparsity", ""), ("bits", "bits", ""),
    ("storage_bytes", "storage MB", "mb"), ("fp32_bytes", "fp32 MB", "mb"),
    ("dev_accuracy", "dev acc %", "pct"), ("test_accuracy", "test acc %", "pct"), ("test_accuracy_ci", "test 95 %", "ci"),
    ("above_majority", "above majority", "l"), ("on_frontier", "frontier (dev)", "l"),
    ("training_effect", "vs own uncompressed (test)", "l"),
]

BENCH_COLUMNS = [
    ("variant", "variant", "l"), ("format", "format", "l"), ("backend", "backend", "l"), ("device", "device", "l"),
    ("dtype", "dtype", "l"), ("batch", "batch", ""), ("seq_len", "seq", ""),
    ("storage_bytes", "storage MB", "mb"), ("file_bytes", "file MB", "mb"), ("latency_ms_p50", "p50 ms", ""),
    ("latency_ms_p90", "p90 ms", ""), ("latency_ms_p99", "p99 ms", ""), ("spread_flag", "spread", "l"),
    ("throughput_seq_s", "seq/s", ""), ("peak_mem_bytes", "peak MB", "mb"), ("dev_accuracy", "dev acc %", "pct"),
    ("test_accuracy", "test acc %", "pct"), ("test_accuracy_ci", "test 95 %", "ci"),
    ("accuracy_source", "accuracy source", "l"), ("threads", "threads", ""), ("status", "status", "l"),
    ("reason", "reason", "l"),
]

FINETUNE_COLUMNS = [
    ("model", "size", "l"), ("params", "params", ""), ("lr", "chosen lr", ""), ("seed", "chosen seed", ""),
    ("candidates_text", "dev accuracy of every (lr, seed) candidate", "l"),
    ("dev_accuracy", "dev acc %", "pct"), ("dev_accuracy_ci", "dev 95 %", "ci"),
    ("test_accuracy", "test acc %", "pct"), ("test_accuracy_ci", "test 95 %", "ci"),
    ("majority_accuracy", "majority %", "pct"), ("learned", "learned the task (test)", "l"),
    ("converged_text", "finetuning converged (dev)", "l"),
]


def storage_answer_columns(sel: str, rep: str) -> list[tuple[str, str, str]]:
    return [("budget_mb", "budget MB", ""), ("variant", "variant (chosen on dev)", "l"), ("compression", "compression", "l"),
            ("storage_mb", "storage MB", ""), (f"{sel}_accuracy", f"{sel} acc %", "pct"),
            ("choice", f"why this one ({sel})", "l"), (f"{rep}_accuracy", f"{rep} acc %", "pct"), (f"{rep}_accuracy_ci", f"{rep} 95 %", "ci"),
            ("runner_up", "runner-up", "l"), ("runner_up_accuracy", f"runner-up {rep} %", "pct"),
            ("mark", f"vs runner-up on {rep} (exact McNemar)", "l")]


def latency_answer_columns(sel: str, rep: str) -> list[tuple[str, str, str]]:
    return [("budget_ms", "budget ms", ""), ("variant", "variant (chosen on dev)", "l"), ("format", "format", "l"),
            ("backend", "backend", "l"), ("device", "device", "l"), ("dtype", "dtype", "l"),
            ("latency_ms_p50", "p50 ms", ""),
            (f"{sel}_accuracy", f"{sel} acc %", "pct"), ("choice", f"why this one ({sel})", "l"),
            (f"{rep}_accuracy", f"{rep} acc %", "pct"),
            (f"{rep}_accuracy_ci", f"{rep} 95 %", "ci"), ("runner_up", "runner-up", "l"),
            ("mark", f"vs runner-up on {rep} (exact McNemar)", "l")]


def preference_note(ctx: dict[str, Any]) -> str:
    """How the answer tables trade accuracy for speed and storage (`report.answers.prefer_cheaper`)."""
    sel, margin = ctx["select_split"], ctx.get("margin")
    if not margin:
        return f"Each answer is the best on {sel}."
    return (f"A smaller (storage) or faster (latency) row replaces the best on {sel} when, on the same {sel} examples, "
            f"the one-sided 95 % lower bound of its accuracy minus the best's is above −{100 * margin:g} points "
            "(Tango's score bound); the 'why this one' column says so. A row whose interval is too wide is not preferred.")


def verdict_class(v: Any) -> str:
    return {"won": "won", "lost": "lost", "within noise": "noise"}.get(v.outcome or "", "")


def splits_text(ctx: dict[str, Any]) -> str:
    """What each split did, and the majority baseline, in one paragraph (HTML and Markdown)."""
    sel, rep = ctx["select_split"], ctx["report_split"]
    maj = ctx.get("majority")
    text = (f"{sel.capitalize()} selects: finetune checkpoints, each size's learning rate and seed, when pruning "
            f"recovery stops, the Pareto frontier and the variant each answer names. {rep.capitalize()} reports: every "
            f"accuracy in the verdict, the answer tables and the plots, with 95 % Wilson intervals; {sel} is shown "
            "beside it.")
    if maj:
        name = maj.get("label_name", maj.get("label"))
        text += (f" Majority baseline: always answering {name!r} scores {100 * maj['accuracy']:.1f} % of {rep} "
                 f"(n = {maj['n']}); a model not significantly above it did not learn the task.")
    overlap = ctx.get("task_overlap")
    if overlap:
        from tlc_export.data.overlap import overlap_line

        held = overlap.get("heldout_documents") or {}
        text += (" Task text in the pretraining corpus: " + overlap_line(overlap)
                 + (f"; the pretraining corpus left out the task's {sum(held.values())} dev and test documents" if held
                    else "") + ".")
    return text


def majority_note(ctx: dict[str, Any]) -> str:
    """One line under each answer table: the accuracy of always answering the majority label."""
    maj = ctx.get("majority")
    if not maj:
        return ""
    name = maj.get("label_name", maj.get("label"))
    return f"Majority baseline on {ctx['report_split']}: {100 * maj['accuracy']:.1f} % (always {name!r})."


def rank1_note(ctx: dict[str, Any]) -> str:
    """Under the latency answers: own-code ONNX files that carry the paper's fractional zero points as rank-1
    features (slower than onnx-int8-dynamic on CPU), and the recipe field whose grid needs none."""
    r = ctx.get("rank1")
    if not r:
        return ""
    files = f"{r['files']} own-code ONNX file" + ("s" if r["files"] != 1 else "")
    return (f"{files} of this run use the paper's grid, whose zero points are fractional: integer kernels take only "
            f"integer ones, so the files carry {r['terms']} rank-1 term(s) as extra GEMM inputs (a GEMV and a Concat "
            "each), which makes them slower on CPU than onnx-int8-dynamic (runtime_bench/own_codes_speed). "
            "compress.quantize.zero_point: integer (the default) puts each zero point on an "
            "integer (q0 moved by at most half a step), and its files need none; tlc run then re-runs compress onward "
            "and reuses pretraining and finetuning.")


def not_learned_lines(ctx: dict[str, Any]) -> list[str]:
    rep = ctx["report_split"]
    out = []
    for r in ctx.get("not_learned", []):
        ci = r.get(f"{rep}_accuracy_ci") or [float("nan")] * 2
        out.append(f"{r['model']} did not learn the task: {rep} accuracy {100 * r[f'{rep}_accuracy']:.1f} % "
                   f"[{100 * ci[0]:.1f}, {100 * ci[1]:.1f}] is not significantly above the majority class "
                   f"({100 * r['majority_accuracy']:.1f} %; exact McNemar p = {r.get('above_majority_p', float('nan')):.3g}). "
                   "Its variants are still listed, but their accuracies mean little.")
    out += list(ctx.get("training_effects") or [])
    for r in ctx.get("not_converged", []):
        out.append(f"{r['model']}'s finetuning had not converged: its best dev accuracy came {r.get('evals_since_best')} "
                   "evaluation(s) before the end (converged means two or more evaluations without a new best); "
                   "a longer finetune may change its accuracy.")
    return out


def epochs_html(notes: tuple[str | None, list[str]] | None) -> str:
    """Epochs seen per size, and the pretrain stage's warnings for budgets that repeat the corpus."""
    summary, warnings = notes or (None, [])
    out = [f"<p class='note' id='epochs'>{esc(summary)}</p>"] if summary else []
    out += [f"<p class='warning epoch-warning'>{esc(w)}</p>" for w in warnings]
    return "\n".join(out)


def render_html(ctx: dict[str, Any]) -> str:
    """ctx: name, verdict, figures {id: (png, alt)}, storage_answers, latency_batch, latency_answers,
    variants, bench, environment, definition, finetune, majority, select_split, report_split, not_learned."""
    v = ctx["verdict"]
    sel, rep = ctx["select_split"], ctx["report_split"]
    figs = ctx["figures"]
    env = ctx.get("environment") or {}
    env_txt = ", ".join(f"{k}: {env[k]}" for k in ("cpu", "threads", "gpu", "driver", "torch", "onnxruntime") if env.get(k))
    warn = "".join(f"<p class='warn'>{esc(line)}</p>" for line in not_learned_lines(ctx))
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>tlc report — {esc(ctx['name'])}</title><style>{CSS}</style></head><body>",
        f"<h1>Train Large, Then Compress — {esc(ctx['name'])}</h1>",
        f"<p class='note'>{esc(env_txt)}</p>",
        ctx.get("claims_html", ""),  # the reproduction card opens the report (report/claims)
        f"<h2>Did train large, then compress win?</h2><p id='verdict' class='verdict {verdict_class(v)}'>{esc(v.sentence)}</p>",
        f"<p class='note'>{esc(ctx['definition'])}</p>",
        f"<div id='did-not-learn'>{warn}</div>" if warn else "",
        f"<p id='splits' class='splits'>{esc(splits_text(ctx))}</p>",
        f"<h2>Accuracy vs storage on {esc(rep)} (Figure 6/7 analogue)</h2>",
        img(*figs["frontier-plot"]),
        "<h2>Best variant per storage budget</h2>",
        f"<p class='note'>Chosen on {esc(sel)} among the variants that fit, reported on {esc(rep)}; the last column "
        f"compares the choice with the runner-up on the same {esc(rep)} examples (≈: within noise). "
        f"{esc(preference_note(ctx))}</p>",
        table(ctx["storage_answers"], storage_answer_columns(sel, rep), "storage-answers"),
        f"<p class='note'>{esc(majority_note(ctx))}</p>",
        f"<h2>Best (variant, backend) per p50 latency budget (batch {esc(ctx.get('latency_batch'))})</h2>",
        f"<p class='note'>{esc(preference_note(ctx))}</p>",
        table(ctx["latency_answers"], latency_answer_columns(sel, rep), "latency-answers"),
        f"<p class='note'>{esc(majority_note(ctx))}</p>",
        f"<p id='rank1-note' class='note'>{esc(rank1_note(ctx))}</p>" if ctx.get("rank1") else "",
        f"<h2>Accuracy vs latency per backend on {esc(rep)}</h2>",
        img(*figs["latency-plot"]),
        "<h2>Finetuning: learning rate and seed chosen on dev</h2>",
        table(ctx.get("finetune") or [], FINETUNE_COLUMNS, "finetune-table", row_attr="model"),
        "<h2>Pretraining curves</h2>",
        img(*figs["pretrain-plot"]),
        epochs_html(ctx.get("epoch_notes")),
        ctx.get("plan_html", ""),  # a run made from a `tlc plan`: the plan against it (report/plan_check.py)
        ctx.get("ablation_html", ""),  # Figure 10, Figure 8 and Table 2 (report/checkpoints.py)
        "<h2>Compression error</h2>",
        img(*figs["error-plot"]),
        "<h2>Variants (compress stage)</h2>",
        table(ctx["variants"], VARIANT_COLUMNS, "variants-table", sortable=True, row_attr="variant"),
        "<h2>All benchmark results</h2><p class='note'>Click a column header to sort.</p>",
        table(ctx["bench"], BENCH_COLUMNS, "results-table", sortable=True, row_attr="variant"),
        f"<script>{JS}</script></body></html>",
    ]
    return "\n".join(parts)
