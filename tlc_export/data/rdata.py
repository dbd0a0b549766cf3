"""A minimal reader for R's XDR serialization and lazy-load databases (.rdx/.rdb).

Enough of R's `serialize.c` to read package data sets (character vectors, lists, data frames):
vectors, pairlists with attributes and tags, symbols, references, and the common ALTREP
classes. Closures, environments' contents and byte code are read structurally or refused.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# SEXP type codes (Rinternals.h) and the serializer's pseudo-types (serialize.c).
NILSXP, SYMSXP, LISTSXP, CLOSXP, ENVSXP, PROMSXP, LANGSXP = 0, 1, 2, 3, 4, 5, 6
SPECIALSXP, BUILTINSXP, CHARSXP, LGLSXP, INTSXP, REALSXP = 7, 8, 9, 10, 13, 14
CPLXSXP, STRSXP, DOTSXP, VECSXP, EXPRSXP, BCODESXP = 15, 16, 17, 19, 20, 21
EXTPTRSXP, WEAKREFSXP, RAWSXP, S4SXP = 22, 23, 24, 25
ALTREP_SXP, EMPTYENV_SXP, BASEENV_SXP, PERSISTSXP = 238, 242, 241, 247
PACKAGESXP, NAMESPACESXP, BASENAMESPACE_SXP = 248, 249, 250
MISSINGARG_SXP, UNBOUNDVALUE_SXP, GLOBALENV_SXP, NILVALUE_SXP, REFSXP = 251, 252, 253, 254, 255

NA_INTEGER = -(2**31)


class RFormatError(ValueError):
    """The bytes are not R serialization this reader understands."""


@dataclass
class RSymbol:
    name: str


@dataclass
class REnvironment:
    """An environment's frame as a dict (enough to reach data stored in it)."""

    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class RObject:
    """An R value with attributes; `value` is a list / numpy array / list of str|None."""

    type: int
    value: Any
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def names(self) -> list[str] | None:
        n = self.attributes.get("names")
        return n.value if isinstance(n, RObject) else None

    @property
    def r_class(self) -> list[str]:
        c = self.attributes.get("class")
        return c.value if isinstance(c, RObject) else []

    def __getitem__(self, key: str) -> Any:
        names = self.names or []
        if key not in names:
            raise KeyError(key)
        return self.value[names.index(key)]


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0
        self.refs: list[Any] = []

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise RFormatError("truncated R serialization")
        b = self.data[self.pos : self.pos + n]
        self.pos += n
        return b

    def int(self) -> int:
        return struct.unpack(">i", self._take(4))[0]

    def length(self) -> int:
        n = self.int()
        if n == -1:  # long vector: two ints, upper then lower 32 bits
            hi, lo = self.int(), self.int()
            n = (hi << 32) + lo
        return n

    def header(self) -> None:
        fmt = self._take(2)
        if fmt != b"X\n":
            raise RFormatError(f"only XDR ('X') R serialization is supported, got {fmt!r}")
        version = self.int()
        self.int(), self.int()  # writer R version, minimal reader version
        if version == 3:
            self._take(self.int())  # native encoding name
        elif version != 2:
            raise RFormatError(f"unsupported R serialization version {version}")

    def item(self) -> Any:
        flags = self.int()
        t = flags & 0xFF
        has_attr, has_tag = bool(flags & (1 << 9)), bool(flags & (1 << 10))

        if t == NILVALUE_SXP:
            return None
        if t in (EMPTYENV_SXP, BASEENV_SXP, GLOBALENV_SXP, BASENAMESPACE_SXP,
                 UNBOUNDVALUE_SXP, MISSINGARG_SXP):
            return REnvironment()
        if t == REFSXP:
            idx = flags >> 8 or self.int()
            return self.refs[idx - 1]
        if t == PERSISTSXP:
            self.int()
            names = [self.item() for _ in range(self.int())]
            obj = RObject(PERSISTSXP, names)
            self.refs.append(obj)
            return obj
        if t == SYMSXP:
            sym = RSymbol(self.item() or "")
            self.refs.append(sym)
            return sym
        if t in (PACKAGESXP, NAMESPACESXP):
            self.int()
            obj = RObject(t, [self.item() for _ in range(self.int())])
            self.refs.append(obj)
            return obj
        if t == ENVSXP:
            self.int()  # locked
            env = REnvironment()
            self.refs.append(env)
            self.item()  # enclosure
            frame, hashtab = self.item(), self.item()
            self.item()  # attributes
            for part in (frame, hashtab):
                _collect_frame(part, env.values)
            return env
        if t in (LISTSXP, LANGSXP, CLOSXP, PROMSXP, DOTSXP):
            return self._pairlist(flags)
        if t == ALTREP_SXP:
            info, state, attr = self.item(), self.item(), self.item()
            obj = _altrep(info, state)
            obj.attributes = _attr_dict(attr)
            return obj
        if t == CHARSXP:
            n = self.int()
            return None if n == -1 else self._take(n).decode("utf-8", "replace")

        obj = self._vector(t)
        if has_attr:
            obj.attributes = _attr_dict(self.item())
        del has_tag
        return obj

    def _pairlist(self, flags: int) -> RObject:
        """A pairlist read iteratively: long attribute/argument lists would overflow recursion."""
        cells: list[tuple[str | None, Any]] = []
        t = flags & 0xFF
        attrs: Any = None
        while True:
            a = self.item() if flags & (1 << 9) else None
            if attrs is None:
                attrs = a
            tag = self.item() if flags & (1 << 10) else None
            cells.append((tag.name if isinstance(tag, RSymbol) else None, self.item()))
            # The cdr: continue in place while it is another cell of the same kind.
            flags = self.int()
            if (flags & 0xFF) == t:
                continue
            if (flags & 0xFF) != NILVALUE_SXP:
                self.pos -= 4
                cells.append((None, self.item()))
            break
        return RObject(t, cells, _attr_dict(attrs))

    def _vector(self, t: int) -> RObject:
        if t in (LGLSXP, INTSXP):
            n = self.length()
            return RObject(t, np.frombuffer(self._take(4 * n), dtype=">i4").astype(np.int32))
        if t == REALSXP:
            n = self.length()
            return RObject(t, np.frombuffer(self._take(8 * n), dtype=">f8").astype(np.float64))
        if t == CPLXSXP:
            n = self.length()
            return RObject(t, np.frombuffer(self._take(16 * n), dtype=">f8").astype(np.float64).view(np.complex128))
        if t == RAWSXP:
            return RObject(t, self._take(self.length()))
        if t in (STRSXP, VECSXP, EXPRSXP):
            n = self.length()
            return RObject(t, [self.item() for _ in range(n)])
        if t == S4SXP:
            return RObject(t, None)
        if t in (SPECIALSXP, BUILTINSXP):
            return RObject(t, self._take(self.int()).decode())
        if t == EXTPTRSXP:
            obj = RObject(t, None)
            self.refs.append(obj)
            self.item(), self.item()
            return obj
        if t == WEAKREFSXP:
            obj = RObject(t, None)
            self.refs.append(obj)
            return obj
        raise RFormatError(f"R object type {t} (e.g. byte code) is not supported by this reader")


def _attr_dict(pairlist: Any) -> dict[str, Any]:
    if not isinstance(pairlist, RObject) or pairlist.type != LISTSXP:
        return {}
    return {tag: value for tag, value in pairlist.value if tag is not None}


def _collect_frame(part: Any, into: dict[str, Any]) -> None:
    if isinstance(part, RObject) and part.type == LISTSXP:
        into.update({tag: v for tag, v in part.value if tag is not None})
    elif isinstance(part, RObject) and part.type == VECSXP:
        for bucket in part.value:
            _collect_frame(bucket, into)


def _altrep(info: Any, state: Any) -> RObject:
    """Materialize the ALTREP classes base R writes for ordinary data."""
    cls = info.value[0][1].name if isinstance(info, RObject) and isinstance(info.value[0][1], RSymbol) else "?"
    if cls == "compact_intseq":
        n, start, step = (int(x) for x in state.value)
        return RObject(INTSXP, np.arange(start, start + n * step, step, dtype=np.int32))
    if cls == "compact_realseq":
        n, start, step = state.value
        return RObject(REALSXP, start + step * np.arange(int(n), dtype=np.float64))
    if cls == "deferred_string":
        source = state.value[0][1]
        return RObject(STRSXP, [str(x) for x in source.value])
    if cls.startswith("wrap_"):
        return state.value[0] if isinstance(state.value[0], RObject) else RObject(VECSXP, state.value)
    raise RFormatError(f"unsupported ALTREP class {cls!r}")


def _decompress(blob: bytes) -> bytes:
    """R's lazy-load compression: 4-byte big-endian length, optional type byte, payload."""
    if blob[:2] == b"\x1f\x8b":
        return gzip.decompress(blob)
    expected = struct.unpack(">I", blob[:4])[0]
    kind, body = blob[4:5], blob[5:]
    if kind == b"Z":
        out = lzma.decompress(body)
    elif kind == b"2":
        out = bz2.decompress(body)
    elif kind == b"0":
        out = body
    else:
        out = zlib.decompress(blob[4:])
    if len(out) != expected:
        raise RFormatError(f"decompressed {len(out)} bytes, header says {expected}")
    return out


def unserialize(data: bytes) -> Any:
    """Read one serialized R object (the bytes after decompression)."""
    r = _Reader(data)
    r.header()
    return r.item()


def read_rds(path: Path) -> Any:
    return unserialize(_decompress(Path(path).read_bytes()))


def lazyload_index(rdx: bytes) -> dict[str, tuple[int, int]]:
    """Map variable name → (offset, length) in the .rdb, from the .rdx bytes."""
    index = unserialize(_decompress(rdx))
    variables = index["variables"]
    return {name: (int(v.value[0]), int(v.value[1])) for name, v in zip(variables.names, variables.value, strict=True)}


def lazyload_object(rdb: bytes, offset: int, length: int) -> Any:
    return unserialize(_decompress(rdb[offset : offset + length]))


def lazyload_database(rdx: bytes, rdb: bytes) -> dict[str, Any]:
    """Every variable of a lazy-load database (`data/Rdata.rdx` + `.rdb`), unserialized."""
    return {name: lazyload_object(rdb, off, n) for name, (off, n) in lazyload_index(rdx).items()}
