"""Dense bit packing of k-bit codes (k = 2..8) into bytes: ceil(n·k / 8) bytes for n codes.

Layout: code i occupies bits [i·k, (i+1)·k) of the little-endian bit stream, least significant bit
first (`np.packbits(..., bitorder="little")`). Consequences: k = 8 is the codes themselves, k = 4
puts code 2j in the low nibble of byte j, k = 6 packs 4 codes into 3 bytes. The final byte is
zero-padded.

Signed (symmetric) codes are stored with an offset of 2^(k-1): -(2^(k-1)-1)..2^(k-1)-1 becomes
1..2^k-1 (`to_unsigned` / `from_unsigned`), so every k-bit field is an unsigned integer.
"""

from __future__ import annotations

import numpy as np

from tlc_export.errors import TlcError


class PackingError(TlcError, ValueError):
    """Codes do not fit the requested bit width, or a buffer is too short."""


def packed_nbytes(n: int, k: int) -> int:
    return (n * k + 7) // 8


def _check_k(k: int) -> None:
    if not (isinstance(k, (int, np.integer)) and 2 <= k <= 8):
        raise PackingError(f"bit width {k!r} is not supported: pack 2..8-bit codes")


def pack_bits(codes: np.ndarray, k: int) -> np.ndarray:
    """Pack unsigned integer codes (each < 2^k) into a uint8 array of ceil(n·k/8) bytes."""
    _check_k(k)
    flat = np.asarray(codes).reshape(-1)
    if flat.size and (flat.min() < 0 or flat.max() >= (1 << k)):
        raise PackingError(
            f"codes span {int(flat.min())}..{int(flat.max())}, outside 0..{(1 << k) - 1} for {k}-bit packing "
            "(signed codes: convert with to_unsigned first)"
        )
    flat = flat.astype(np.uint8, copy=False)
    n = flat.size
    if k == 8:
        return flat.copy()
    if k == 4:
        if flat.size % 2:
            flat = np.append(flat, np.uint8(0))
        return (flat[0::2] | (flat[1::2] << 4)).astype(np.uint8)
    # Eight k-bit codes fill exactly k bytes: assemble them in a little-endian uint64 and keep its
    # low k bytes. Same bit stream as packbits(bitorder="little"), without a byte per bit.
    pad = (-flat.size) % 8
    if pad:
        flat = np.concatenate([flat, np.zeros(pad, dtype=np.uint8)])
    groups = flat.reshape(-1, 8).astype("<u8")
    acc = np.zeros(groups.shape[0], dtype="<u8")
    for j in range(8):
        acc |= groups[:, j] << np.uint64(j * k)
    out = acc.view(np.uint8).reshape(-1, 8)[:, :k].reshape(-1)
    return out[: packed_nbytes(n, k)].copy()


def unpack_bits(buf: np.ndarray, k: int, n: int) -> np.ndarray:
    """Inverse of `pack_bits`: the first `n` k-bit codes of `buf`, as uint8."""
    _check_k(k)
    buf = np.asarray(buf, dtype=np.uint8).reshape(-1)
    need = packed_nbytes(n, k)
    if buf.size < need:
        raise PackingError(f"packed buffer has {buf.size} bytes, {n} {k}-bit codes need {need}")
    if k == 8:
        return buf[:n].copy()
    if k == 4:
        out = np.empty(2 * need, dtype=np.uint8)
        out[0::2] = buf[:need] & 0x0F
        out[1::2] = buf[:need] >> 4
        return out[:n]
    m = -(-n // 8)
    raw = np.zeros(m * k, dtype=np.uint8)
    raw[:need] = buf[:need]
    wide = np.zeros((m, 8), dtype=np.uint8)
    wide[:, :k] = raw.reshape(m, k)
    acc = wide.reshape(-1).view("<u8")
    mask = np.uint64((1 << k) - 1)
    out = np.empty((m, 8), dtype=np.uint8)
    for j in range(8):
        out[:, j] = (acc >> np.uint64(j * k)) & mask
    return out.reshape(-1)[:n]


def to_unsigned(codes: np.ndarray, k: int) -> np.ndarray:
    """Signed symmetric codes -> unsigned k-bit fields (add 2^(k-1))."""
    return (np.asarray(codes).astype(np.int16) + (1 << (k - 1))).astype(np.uint8)


def from_unsigned(codes: np.ndarray, k: int) -> np.ndarray:
    """Unsigned k-bit fields -> signed symmetric codes (int8)."""
    return (np.asarray(codes).astype(np.int16) - (1 << (k - 1))).astype(np.int8)
