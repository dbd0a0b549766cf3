"""The R XDR unserializer on hand-built bytes (no network): data frames, symbols, refs, ALTREP."""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np

from tlc_export.data.rdata import lazyload_database

HAS_ATTR, HAS_TAG, IS_OBJ = 1 << 9, 1 << 10, 1 << 8


def i32(v: int) -> bytes:
    return struct.pack(">i", v)


def charsxp(s: str | None) -> bytes:
    if s is None:
        return i32(9) + i32(-1)
    b = s.encode()
    return i32(9 | (1 << 15)) + i32(len(b)) + b  # gp bit 15: UTF-8 (ignored by the reader)


def strsxp(values: list[str | None]) -> bytes:
    return i32(16) + i32(len(values)) + b"".join(charsxp(v) for v in values)


def sym(name: str) -> bytes:
    return i32(1) + charsxp(name)


def header() -> bytes:
    return b"X\n" + i32(3) + i32(0x040300) + i32(0x030500) + i32(5) + b"UTF-8"


def data_frame() -> bytes:
    # list(text = c("first line", NA), n = 7:9 as ALTREP compact_intseq) with names/class/row.names
    body = i32(19 | HAS_ATTR | IS_OBJ) + i32(2) + strsxp(["first line", None])
    altrep_info = i32(2) + sym("compact_intseq") + i32(2) + sym("base") + i32(2) + i32(13) + i32(1) + i32(13) + i32(254)
    altrep_state = i32(14) + i32(3) + struct.pack(">3d", 3, 7, 1)
    body += i32(238) + altrep_info + altrep_state + i32(254)
    attrs = i32(2 | HAS_TAG) + sym("names") + strsxp(["text", "n"])
    attrs += i32(2 | HAS_TAG) + sym("class") + strsxp(["data.frame"])
    # A repeated symbol is written as a reference to the first occurrence (ref 1 = `names`).
    attrs += i32(2 | HAS_TAG) + i32(255 | (1 << 8)) + strsxp(["ignored"])
    attrs += i32(254)
    return header() + body + attrs


def index(offset: int, length: int) -> bytes:
    variables = i32(19 | HAS_ATTR) + i32(1) + i32(13) + i32(2) + i32(offset) + i32(length)
    variables += i32(2 | HAS_TAG) + sym("names") + strsxp(["novel"]) + i32(254)
    idx = i32(19 | HAS_ATTR) + i32(2) + variables + i32(19) + i32(0)
    idx += i32(2 | HAS_TAG) + i32(1) + charsxp("names") + strsxp(["variables", "references"]) + i32(254)
    return header() + idx


def test_lazyload_database_reads_a_data_frame():
    raw = data_frame()
    blob = struct.pack(">I", len(raw)) + zlib.compress(raw)
    rdb = b"\0" * 10 + blob
    rdx = gzip.compress(index(10, len(blob)))
    db = lazyload_database(rdx, rdb)
    df = db["novel"]
    assert df.names == ["text", "n"] and df.r_class == ["data.frame"]
    assert df["text"].value == ["first line", None]
    assert np.array_equal(df["n"].value, [7, 8, 9])
