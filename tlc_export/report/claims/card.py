"""The reproduction card: one row per claim of the paper, as written to report/claims.json."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from tlc_export.report.claims.rules import FAILS, HOLDS, INDICATIVE, NOT_MEASURED, STATUSES

SCHEMA_VERSION = 1


def _finite(x: Any) -> Any:
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_finite(v) for v in x]
    return x


@dataclass
class Part:
    """One separately decided piece of a claim (e.g. claim 3's 4-bit part and its pruning part)."""

    name: str
    status: str
    evidence: str
    reason: str | None = None
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    numbers: dict[str, Any] = field(default_factory=dict)


@dataclass
class Claim:
    """A claim of the paper checked on one run.

    `estimate` and `interval` are the deciding difference d (largest − smallest size) and its 95 %
    interval in the unit `metric` names; `numbers` holds every input the decision used; `rule` is
    the decision rule in words (from `claims.rules`). When `status` is "not measured", `reason`
    says what was missing and how to get it. `seeds` is how many pretraining seeds the interval
    spans: with one, a decided status is shown as "holds (one seed: indicative)" — the interval says
    how precisely this seed's models were measured, not what another seed would give.
    """

    number: int
    key: str
    claim: str
    figure: str
    status: str
    evidence: str
    rule: str
    reason: str | None = None
    metric: str | None = None
    unit: str | None = None  # d's unit, printed after it in every view (nats, accuracy as a fraction, weight error)
    estimate: float | None = None
    interval: tuple[float, float] | None = None
    interval_method: str | None = None
    compared: dict[str, str] | None = None
    numbers: dict[str, Any] = field(default_factory=dict)
    parts: list[Part] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)
    seeds: int = 1

    def __post_init__(self) -> None:
        if self.status not in STATUSES:
            raise ValueError(f"claim {self.number}: unknown status {self.status!r} (one of {STATUSES})")
        if self.status == NOT_MEASURED and not self.reason:
            raise ValueError(f"claim {self.number}: 'not measured' needs a reason")

    @property
    def indicative(self) -> bool:
        """A decided status from one pretraining seed: indicative, not a finding."""
        return self.status in (HOLDS, FAILS) and self.seeds < 2

    @property
    def status_label(self) -> str:
        """The status as every view shows it in its status column: "holds (one seed: indicative)"."""
        return f"{self.status} ({INDICATIVE})" if self.indicative else self.status

    @property
    def status_text(self) -> str:
        """"not measured (why)" or the labelled status: what every view of the card prints."""
        return f"{NOT_MEASURED} ({self.reason})" if self.status == NOT_MEASURED else self.status_label

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["status_text"] = self.status_text
        d["indicative"] = self.indicative
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Claim:
        known = {f.name for f in fields(cls)}
        kw = {k: v for k, v in d.items() if k in known}
        if kw.get("interval") is not None:
            kw["interval"] = tuple(kw["interval"])
        kw["parts"] = [Part(**{**p, "interval": tuple(p["interval"]) if p.get("interval") else None})
                       for p in d.get("parts") or []]
        return cls(**kw)


@dataclass
class Card:
    """Every claim for one run; `split` is the split accuracies were taken from (test reports)."""

    run: str
    run_dir: str
    claims: list[Claim]
    split: str = "test"
    confidence: float = 0.95
    schema: int = SCHEMA_VERSION

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, and strict JSON: a non-finite number (a diverged loss) is written as null."""
        return _finite({"schema": self.schema, "run": self.run, "run_dir": self.run_dir, "split": self.split,
                        "confidence": self.confidence, "claims": [c.to_dict() for c in self.claims]})

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Card:
        return cls(run=d["run"], run_dir=d["run_dir"], claims=[Claim.from_dict(c) for c in d["claims"]],
                   split=d.get("split", "test"), confidence=d.get("confidence", 0.95), schema=d.get("schema", SCHEMA_VERSION))

    def by_number(self) -> dict[int, Claim]:
        return {c.number: c for c in self.claims}
