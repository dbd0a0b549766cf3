"""Which pretrained checkpoint each finetuned model starts from (`finetune.from`).

- `final`: every size from the end of its budget (`pretrain/<size>/checkpoint`), as always.
- `every-kept`: every size from its final checkpoint *and* from each checkpoint kept earlier
  (`pretrain.keep_checkpoints_at`), the paper's Figure 8. The final one keeps the size's name and is
  the size's model everywhere downstream; an earlier one is its own target `<size>@<tag>` (e.g.
  `4L-256H@k50`), finetuned and quantized under that name and reported beside the size's own
  (`finetune/<size>@<tag>/`, `compress/<size>@<tag>/`, rows in `finetune/results.json` and
  `compress/checkpoints.json`), never exported or benchmarked.
- `matched-perplexity`: every size from the first of its candidates (kept checkpoints and the
  final one, in training order) whose validation perplexity is ≤ the worst size's final
  perplexity (the paper's Table 2: sizes stopped at the same perplexity). The choice is the size's
  model everywhere downstream and is recorded.

Every candidate was evaluated on the same fixed validation sample when it was saved (pretrain
stage), so the perplexities compare.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from tlc_export.errors import StageError

FINAL = "final"
KEY_SEP = "@"

MATCH_RULE = ("Target = the highest final validation perplexity among the sizes (the worst size's). Each size "
              "starts from the first checkpoint, in training order, among those kept (pretrain.keep_checkpoints_at) "
              "and its final one, whose validation perplexity is at most the target; the worst size therefore starts "
              "from its final checkpoint (or an earlier one that was already as good).")


@dataclass(frozen=True)
class Checkpoint:
    """A pretrained checkpoint a finetune can start from."""

    size: str
    tag: str  # "final", or the kept fraction's tag ("k50")
    fraction: float  # of the pretraining budget (1.0 for the final checkpoint)
    elapsed_s: float | None
    step: int | None
    val_loss: float | None
    val_ppl: float | None
    path: str  # run-relative: pretrain/<size>/checkpoint or pretrain/<size>/kept/<tag>

    @property
    def final(self) -> bool:
        return self.tag == FINAL

    def record(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Target:
    """One model the finetune stage trains: `key` names its folders and its variants."""

    key: str  # "4L-256H", or "4L-256H@k50" for an earlier checkpoint under every-kept
    size: str
    checkpoint: Checkpoint
    primary: bool  # the size's model for compress, export, bench and the report's answers


@dataclass(frozen=True)
class Match:
    """The matched-perplexity choice: the target perplexity and each size's checkpoint."""

    target_ppl: float
    worst_size: str
    choices: dict[str, Checkpoint]
    # Per size, the first evaluation on its learning curve at or below the target ({step, elapsed_s,
    # fraction, val_ppl}), None when the curve never got there; empty when no curves were given.
    evaluated: dict[str, dict[str, Any] | None] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        return {"target_ppl": self.target_ppl, "worst_size": self.worst_size, "rule": MATCH_RULE,
                "choices": {s: c.record() for s, c in self.choices.items()}, "first_evaluated": self.evaluated}


def target_key(size: str, tag: str) -> str:
    return size if tag == FINAL else f"{size}{KEY_SEP}{tag}"


def size_of(key: str) -> str:
    """The size name of a target key (`4L-256H@k50` → `4L-256H`)."""
    return key.split(KEY_SEP, 1)[0]


def candidates(pretrain_rows: list[dict[str, Any]]) -> dict[str, list[Checkpoint]]:
    """Per size (in the rows' order): its kept checkpoints before the end, then the final one."""
    out: dict[str, list[Checkpoint]] = {}
    for r in pretrain_rows:
        size = str(r["model"])
        cps = []
        for k in r.get("kept_checkpoints") or []:
            if k.get("final") or float(k.get("fraction", 1.0)) >= 1.0:
                continue  # 1.0 is the final checkpoint itself
            cps.append(Checkpoint(size, str(k["tag"]), float(k["fraction"]), k.get("elapsed_s"), k.get("step"),
                                  k.get("val_loss"), k.get("val_ppl"), str(k["checkpoint"])))
        cps.sort(key=lambda c: (c.elapsed_s if c.elapsed_s is not None else math.inf, c.fraction))
        cps.append(Checkpoint(size, FINAL, 1.0, r.get("elapsed_s"), r.get("steps"), r.get("final_val_loss"),
                              r.get("final_val_ppl"), str(r.get("checkpoint") or f"pretrain/{size}/checkpoint")))
        out[size] = cps
    return out


def match_perplexity(cands: dict[str, list[Checkpoint]]) -> Match:
    """Per size, the first candidate whose validation perplexity is ≤ the worst size's final perplexity."""
    finals = {s: c[-1] for s, c in cands.items() if c}
    scored = {s: c.val_ppl for s, c in finals.items() if c.val_ppl is not None and math.isfinite(c.val_ppl)}
    if not scored:
        raise StageError("finetune.from: matched-perplexity needs each size's final validation perplexity "
                         "(pretrain/results.json `final_val_ppl`); rerun the pretrain stage")
    worst = max(scored, key=lambda s: (scored[s], s))
    target = scored[worst]
    choices = {}
    for size, cps in cands.items():
        ok = [c for c in cps if c.val_ppl is not None and c.val_ppl <= target * (1 + 1e-12)]
        choices[size] = ok[0] if ok else cps[-1]
    return Match(target, worst, choices)


def first_evaluated(curve: list[dict[str, Any]], target_ppl: float, budget_s: float | None) -> dict[str, Any] | None:
    """The first curve point (in training order) whose validation perplexity is at most `target_ppl`."""
    pts = [p for p in curve if p.get("val_ppl") is not None and math.isfinite(float(p["val_ppl"]))]
    pts.sort(key=lambda p: (float(p.get("elapsed_s") or 0.0), int(p.get("step") or 0)))
    for p in pts:
        if float(p["val_ppl"]) <= target_ppl * (1 + 1e-12):
            el = p.get("elapsed_s")
            frac = float(el) / budget_s if el is not None and budget_s else None
            return {"step": p.get("step"), "elapsed_s": el, "fraction": frac, "val_ppl": float(p["val_ppl"]),
                    "kept": p.get("kept")}
    return None


def finetune_targets(mode: str, pretrain_rows: list[dict[str, Any]], sizes: list[str],
                     curves: dict[str, list[dict[str, Any]]] | None = None) -> tuple[list[Target], Match | None]:
    """The models to finetune for `finetune.from`, sizes in grid order, primary first within a size;
    and the matched-perplexity choice whenever it can be made (it is recorded under every mode).
    `curves` (size → its `curves.jsonl` points) adds each size's first evaluation at the target."""
    rows = [r for r in pretrain_rows if r.get("model") in sizes]
    cands = candidates(rows)
    missing = [s for s in sizes if s not in cands]
    if missing:
        raise StageError(f"pretrain/results.json has no row for {', '.join(missing)}; run the pretrain stage")
    match = match_perplexity(cands) if any(len(c) > 1 for c in cands.values()) or mode == "matched-perplexity" else None
    if match is not None and curves:
        budgets = {str(r["model"]): r.get("budget_s") or r.get("elapsed_s") for r in rows}
        match.evaluated.update({s: first_evaluated(curves.get(s) or [], match.target_ppl, budgets.get(s))
                                for s in cands})
    out: list[Target] = []
    for size in sizes:
        cps = cands[size]
        if mode == "matched-perplexity":
            assert match is not None
            out.append(Target(size, size, match.choices[size], True))
        elif mode == "every-kept":
            out.append(Target(size, size, cps[-1], True))
            out.extend(Target(target_key(size, c.tag), size, c, False) for c in cps[:-1])
        else:
            out.append(Target(size, size, cps[-1], True))
    return out, match
