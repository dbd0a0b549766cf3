"""Bit packing: round trips, exact byte counts, and the documented LSB-first bit-stream layout."""

from __future__ import annotations

import numpy as np
import pytest

from tlc_export.compress.packing import (
    PackingError,
    from_unsigned,
    pack_bits,
    packed_nbytes,
    to_unsigned,
    unpack_bits,
)


def reference_stream(codes: np.ndarray, k: int) -> np.ndarray:
    """The layout written out bit by bit: code i at bits [i·k, (i+1)·k), LSB first."""
    bits = []
    for c in codes.tolist():
        bits.extend((c >> j) & 1 for j in range(k))
    bits.extend([0] * (-len(bits) % 8))
    return np.array([sum(bits[i + j] << j for j in range(8)) for i in range(0, len(bits), 8)], dtype=np.uint8)


@pytest.mark.parametrize("k", range(2, 9))
@pytest.mark.parametrize("n", [0, 1, 3, 7, 8, 9, 13, 257])
def test_round_trip_and_size(k: int, n: int) -> None:
    rng = np.random.default_rng(k * 1000 + n)
    codes = rng.integers(0, 2**k, size=n)
    buf = pack_bits(codes, k)
    assert buf.dtype == np.uint8
    assert buf.size == (n * k + 7) // 8 == packed_nbytes(n, k)
    np.testing.assert_array_equal(unpack_bits(buf, k, n), codes)
    np.testing.assert_array_equal(buf, reference_stream(codes, k))


def test_six_bit_packs_four_values_in_three_bytes() -> None:
    codes = np.array([63, 0, 21, 42] * 5)
    buf = pack_bits(codes, 6)
    assert buf.size == 15  # 20 codes × 6 bits = 120 bits
    assert pack_bits(codes[:4], 6).size == 3
    np.testing.assert_array_equal(unpack_bits(buf, 6, 20), codes)


def test_four_bit_is_two_per_byte_and_eight_bit_is_identity() -> None:
    assert pack_bits(np.array([0x3, 0xA]), 4).tolist() == [0xA3]
    assert pack_bits(np.array([0x3, 0xA, 0xF]), 4).size == 2
    c = np.arange(256)
    np.testing.assert_array_equal(pack_bits(c, 8), c.astype(np.uint8))


def test_large_input_round_trip() -> None:
    rng = np.random.default_rng(0)
    for k in (3, 5, 6):
        codes = rng.integers(0, 2**k, size=100_003)
        np.testing.assert_array_equal(unpack_bits(pack_bits(codes, k), k, codes.size), codes)


@pytest.mark.parametrize("k", [2, 4, 6, 8])
def test_signed_codes_with_offset(k: int) -> None:
    qmax = 2 ** (k - 1) - 1
    codes = np.arange(-qmax, qmax + 1, dtype=np.int8)
    u = to_unsigned(codes, k)
    assert int(u.min()) == 1 and int(u.max()) == 2**k - 1
    back = from_unsigned(unpack_bits(pack_bits(u, k), k, codes.size), k)
    np.testing.assert_array_equal(back, codes)


def test_bad_input_raises() -> None:
    with pytest.raises(PackingError, match="outside 0..15"):
        pack_bits(np.array([16]), 4)
    with pytest.raises(PackingError, match="to_unsigned"):
        pack_bits(np.array([-1]), 4)
    with pytest.raises(PackingError, match="need 3"):
        unpack_bits(np.zeros(2, np.uint8), 6, 4)
    with pytest.raises(PackingError, match="bit width"):
        pack_bits(np.array([1]), 9)
