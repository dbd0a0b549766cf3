"""Model sizes of a run, ordered from fewest to most parameters (what "larger" means in every claim)."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

_NAME = re.compile(r"^(\d+)L-(\d+)H$")


@dataclass(frozen=True)
class Size:
    name: str
    params: int | None = None
    layers: int | None = None
    hidden: int | None = None

    def label(self) -> str:
        return f"{self.name} ({self.params / 1e6:.2f} M params)" if self.params else self.name


def order_sizes(names: Iterable[str], *row_lists: Iterable[dict[str, Any]]) -> list[Size]:
    """Sizes sorted by parameter count, taken from the first rows (pretrain, compress …) that give one.

    Without any parameter count a size is ranked by 12·layers·hidden² (the Transformer blocks'
    weights), read from its `{layers}L-{hidden}H` name.
    """
    params: dict[str, int] = {}
    for rows in row_lists:
        for r in rows:
            m = r.get("model")
            if m is not None and r.get("params") and m not in params:
                params[str(m)] = int(r["params"])
    out = []
    for n in dict.fromkeys(names):
        match = _NAME.match(n)
        layers, hidden = (int(match.group(1)), int(match.group(2))) if match else (None, None)
        out.append(Size(n, params.get(n), layers, hidden))

    def key(s: Size) -> tuple[float, str]:
        if s.params:
            return float(s.params), s.name
        if s.layers and s.hidden:
            return 12.0 * s.layers * s.hidden**2, s.name
        return 0.0, s.name

    return sorted(out, key=key)
