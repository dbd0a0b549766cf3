"""The local data cache ($TLC_HOME) and fetching packages with the ordinary registry clients.

Every cached file has a `<file>.sha256` beside it; a file is reused only when its checksum
matches, and is written atomically, so an interrupted fetch never leaves a half file behind.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from tlc_export.atomic import atomic_path, write_text
from tlc_export.errors import DataSourceError

LOCAL_TEXT_ALTERNATIVE = (
    "or use local files instead: a source with `kind: text` and `path: 'corpus/*.txt'` "
    "(or `kind: csv` / `kind: jsonl` with a `column`)"
)
LOCAL_TASK_ALTERNATIVE = (
    "or use a local file instead: `finetune.task` with `kind: csv` (or `jsonl`), `path`, "
    "`text_column` and `label_column`"
)


class FetchError(DataSourceError):
    """A registry client is missing or failed (network, registry down, or the registry said no, e.g. to a
    version that does not exist): not a parsing problem."""


class RegistryUnreachable(FetchError):
    """No answer about the package at all: the client is missing, timed out, or could not reach the registry.
    (A wrong name or version pin is a plain FetchError: the registry answered.)"""


# What npm, pip and apt print when the network, DNS or the registry's host fails (not when a package or
# version is missing).
_UNREACHABLE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|ConnectTimeout|ReadTimeout|Connection refused|"
    r"Connection reset|Network is unreachable|Temporary failure in name resolution|Temporary failure resolving|"
    r"Name or service not known|Could not resolve|ENOTFOUND|EAI_AGAIN|ECONNREFUSED|ECONNRESET|ETIMEDOUT|"
    r"ENETUNREACH|ProxyError|SSLError|certificate verify failed|Failed to fetch",
    re.IGNORECASE,
)


def _client_error(output: str) -> type[FetchError]:
    return RegistryUnreachable if _UNREACHABLE.search(output) else FetchError


def tlc_home() -> Path:
    """Root of the cache: $TLC_HOME, else ~/.cache/tlc."""
    env = os.environ.get("TLC_HOME")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tlc"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def cached_valid(path: Path) -> bool:
    """True when `path` and its checksum file exist and agree."""
    sumfile = _checksum_path(path)
    if not (path.is_file() and sumfile.is_file()):
        return False
    recorded = sumfile.read_text().split()
    return bool(recorded) and recorded[0] == sha256_file(path)


def cached(relpath: str, build: Callable[[Path], None]) -> Path:
    """Return `$TLC_HOME/<relpath>`, calling `build(tmp_path)` once to create it.

    `build` writes the file at the path it is given; it is renamed into place and its checksum
    recorded only when `build` returns normally.
    """
    target = tlc_home() / relpath
    if cached_valid(target):
        return target
    with atomic_path(target) as tmp:
        build(tmp)
        if not tmp.is_file():
            raise DataSourceError(f"internal error: building {relpath} produced no file")
        digest = sha256_file(tmp)
    write_text(_checksum_path(target), f"{digest}  {target.name}\n")
    return target


def cached_documents(relpath: str, produce: Callable[[], Iterable[str]]) -> Path:
    """Cache a list of documents as JSON lines (one JSON string per line)."""

    def build(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            for doc in produce():
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")

    return cached(relpath, build)


def iter_documents(path: Path) -> Iterator[str]:
    """Documents of a cached JSON-lines file, one at a time."""
    with open(path, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_documents(path: Path) -> list[str]:
    return list(iter_documents(path))


def _run(cmd: list[str], cwd: Path, source: str, alternative: str) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=900)
    except FileNotFoundError:
        raise RegistryUnreachable(
            f"data source '{source}': the command `{cmd[0]}` is not installed, so the package cannot "
            f"be fetched. Install it (or fetch on a machine that has it and copy $TLC_HOME = "
            f"{tlc_home()}), {alternative}"
        ) from None
    except subprocess.TimeoutExpired:
        raise RegistryUnreachable(
            f"data source '{source}': `{' '.join(cmd)}` timed out; check network access to the "
            f"registry, {alternative}"
        ) from None


def run_client(cmd: list[str], cwd: Path, *, source: str, alternative: str) -> None:
    """Run a registry client (npm, apt-get, pip); failures become a DataSourceError with the fix."""
    proc = _run(cmd, cwd, source, alternative)
    if proc.returncode != 0:
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        raise _client_error(proc.stdout + proc.stderr)(
            f"data source '{source}': `{' '.join(cmd)}` failed (exit {proc.returncode}):\n{tail}\n"
            f"Check network access to the registry, {alternative}"
        )


def _single_file(folder: Path, pattern: str, what: str, source: str) -> Path:
    found = sorted(folder.glob(pattern))
    if not found:
        raise DataSourceError(f"data source '{source}': the client reported success but no {what} appeared")
    return found[0]


def npm_pack(spec: str, dest: Path, *, source: str, alternative: str) -> None:
    """`npm pack <spec>` and store the tarball at `dest`."""
    with tempfile.TemporaryDirectory(prefix="tlc-npm-") as tmp:
        run_client(["npm", "pack", spec, "--silent"], Path(tmp), source=source, alternative=alternative)
        shutil.move(str(_single_file(Path(tmp), "*.tgz", "package tarball", source)), dest)


def apt_download(package: str, dest: Path, *, source: str, alternative: str) -> None:
    """`apt-get download <package>` (no install, no root needed for the download itself).

    On a fresh machine apt's package lists are empty; as root we run `apt-get update` once and
    retry, otherwise the error says to run it.
    """
    with tempfile.TemporaryDirectory(prefix="tlc-apt-") as tmp:
        cmd = ["apt-get", "download", package]
        proc = _run(cmd, Path(tmp), source, alternative)
        if proc.returncode != 0:
            if hasattr(os, "geteuid") and os.geteuid() == 0:
                run_client(["apt-get", "update"], Path(tmp), source=source, alternative=alternative)
                run_client(cmd, Path(tmp), source=source, alternative=alternative)
            else:
                tail = "\n".join(proc.stderr.strip().splitlines()[-4:])
                raise _client_error(proc.stdout + proc.stderr)(
                    f"data source '{source}': `apt-get download {package}` failed:\n{tail}\n"
                    f"If apt's package lists are empty run `sudo apt-get update` and retry, {alternative}"
                )
        shutil.move(str(_single_file(Path(tmp), f"{package}_*.deb", ".deb file", source)), dest)


def pip_download(spec: str, dest: Path, *, source: str, alternative: str) -> None:
    """`python -m pip download --no-deps <spec>` and store the wheel at `dest`."""
    with tempfile.TemporaryDirectory(prefix="tlc-pip-") as tmp:
        run_client(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", spec, "-d", tmp],
            Path(tmp), source=source, alternative=alternative,
        )
        shutil.move(str(_single_file(Path(tmp), "*.whl", "wheel", source)), dest)


def deb_member(deb: Path, member: str, *, source: str) -> bytes:
    """Read one file out of a .deb without installing it (ar archive → data.tar.*)."""
    import tarfile

    for name, payload in _ar_members(deb):
        if name.startswith("data.tar"):
            import io

            with tarfile.open(fileobj=io.BytesIO(payload), mode="r:*") as tar:
                for m in tar.getmembers():
                    if m.name.lstrip("./") == member.lstrip("/"):
                        f = tar.extractfile(m)
                        if f is not None:
                            return f.read()
            raise DataSourceError(f"data source '{source}': {deb.name} does not contain {member}")
    raise DataSourceError(f"data source '{source}': {deb.name} is not a Debian package (no data.tar member)")


def _ar_members(path: Path) -> Iterator[tuple[str, bytes]]:
    """Members of a Unix ar archive (the .deb container), parsed directly: no dpkg needed."""
    data = path.read_bytes()
    if not data.startswith(b"!<arch>\n"):
        raise DataSourceError(f"{path}: not an ar archive (corrupt download?); delete it and retry")
    pos = 8
    while pos + 60 <= len(data):
        header = data[pos : pos + 60]
        name = header[:16].decode("ascii").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        pos += 60
        yield name, data[pos : pos + size]
        pos += size + (size & 1)  # members are 2-byte aligned
