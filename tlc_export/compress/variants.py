"""How every family names a compressed variant, and which bit widths share a container."""

from __future__ import annotations

# 6-bit codes travel in the INT8 container; a variant's storage_bytes stays its packed size.
INT8_CODE_BITS = (8, 6)


def variant_name(size: str, sparsity: float, bits: int, grid: str | None = None) -> str:
    """`4L-256H.s30.b4`; a variant on a grid other than the recipe's main one adds its tag: `….b4.sym-g64`."""
    from tlc_export.compress.prune import level_name

    return f"{size}.{level_name(sparsity)}.b{bits}" + (f".{grid}" if grid else "")
