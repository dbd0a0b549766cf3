"""How every family names a compressed variant, and which bit widths share a container."""

from __future__ import annotations

from typing import Any

# 6-bit codes travel in the INT8 container; a variant's storage_bytes stays its packed size.
INT8_CODE_BITS = (8, 6)


def variant_name(size: str, sparsity: float, bits: int, grid: str | None = None) -> str:
    """`4L-256H.s30.b4`; a variant on a grid other than the recipe's main one adds its tag: `….b4.sym-g64`."""
    from tlc_export.compress.prune import level_name

    return f"{size}.{level_name(sparsity)}.b{bits}" + (f".{grid}" if grid else "")


def quant_fields(bits: int, qcfg: Any) -> dict[str, Any]:
    """A variant row's quantization fields (`qcfg`: its `QuantConfig`, None for fp32): bits, granularity,
    symmetric, zero_point (asymmetric grids: "paper" or "integer"), group_size (block granularity only)."""
    return {
        "bits": bits,
        "granularity": qcfg.granularity if qcfg is not None else None,
        "symmetric": qcfg.symmetric if qcfg is not None else None,
        "zero_point": None if qcfg is None or qcfg.symmetric else "integer" if qcfg.integer_zero_point else "paper",
        "group_size": qcfg.group_size if qcfg is not None and qcfg.granularity == "block" else None,
    }
