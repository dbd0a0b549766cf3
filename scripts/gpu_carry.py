"""Prepare what a GPU machine without a package index needs to run `python -m runtime_bench.gpu_check`.

    python scripts/gpu_carry.py            # (make gpu-carry) on a machine that reaches PyPI and the data registries

1. `.whl/`: the wheels the lent GPU image lacks, for CPython 3.12 on manylinux x86_64, at the
   versions installed in this environment (the ones the tests ran with): pydantic, pydantic-core,
   annotated-types, typing-inspection, and typing-extensions (the image has one, possibly older
   than pydantic needs); sacrebleu with portalocker, colorama, tabulate and lxml (BLEU in the
   translation check; ~5.5 MB, lxml being most of it). Each wheel's requirements are checked to be
   in the set or in the image.
2. `.tlc-home/`: the built-in data of recipes/gpu-quick.yaml (Brown corpus, rt-polarity), parsed,
   without the raw registry packages (the GPU machine cannot fetch; the parsed files are enough).
Both folders are git-ignored; copy them along with the repository (the device tool: carry
[".whl", ".tlc-home"]). Prints the install line to run there.
"""

from __future__ import annotations

import importlib.metadata as md
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WHEELS = ("pydantic", "pydantic-core", "annotated-types", "typing-inspection", "typing-extensions",
          # BLEU/chrF for the translation check: sacrebleu imports lxml (its WMT XML reader) at import time,
          # so the binary lxml wheel travels too; regex and numpy are on the image (transformers needs them).
          "sacrebleu", "portalocker", "colorama", "tabulate", "lxml")
# Already on the lent GPU image (FIELD-NOTES; device KINDS): requirements these may name.
ON_IMAGE = {"torch", "transformers", "onnx", "onnxruntime", "numpy", "regex", "pyyaml", "rich", "click", "tokenizers",
            "safetensors", "ml-dtypes", "matplotlib", "onnxscript", "typing-extensions"}
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64")


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def download_wheels(dest: Path) -> list[Path]:
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir()
    pins = [f"{name}=={md.version(name)}" for name in WHEELS]
    cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
           "--implementation", "cp", *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(dest), *pins]
    subprocess.run(cmd, check=True)
    wheels = sorted(dest.glob("*.whl"))
    names = {_norm(w.name.split("-")[0]) for w in wheels}
    missing = []
    for w in wheels:
        with zipfile.ZipFile(w) as z:
            meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
            for line in z.read(meta).decode().splitlines():
                if not line.startswith("Requires-Dist:") or "extra ==" in line:
                    continue
                req = _norm(re.split(r"[ ;<>=!~\[(]", line.split(":", 1)[1].strip())[0])
                if req not in names and req not in ON_IMAGE:
                    missing.append(f"{w.name} needs {req}")
    if missing:
        raise SystemExit("incomplete wheel set: " + "; ".join(missing))
    return wheels


def prepare_data(home: Path) -> None:
    env = {**os.environ, "TLC_HOME": str(home)}
    subprocess.run([sys.executable, "-m", "tlc_export", "data", "prepare", str(REPO / "recipes" / "gpu-quick.yaml")],
                   check=True, env=env, cwd=REPO)
    shutil.rmtree(home / "raw", ignore_errors=True)  # registry packages: only needed to parse again


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main() -> None:
    wheels = download_wheels(REPO / ".whl")
    prepare_data(REPO / ".tlc-home")
    total = _size(REPO / ".whl") + _size(REPO / ".tlc-home")
    print("wheels: " + ", ".join(w.name for w in wheels))
    print(f".whl {_size(REPO / '.whl') / 2**20:.1f} MiB + .tlc-home {_size(REPO / '.tlc-home') / 2**20:.1f} MiB "
          f"= {total / 2**20:.1f} MiB to carry")
    print("on the GPU machine, in the repository:\n"
          "  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
          ".whl/*.whl && export PYTHONPATH=/tmp/site:$PWD TLC_HOME=$PWD/.tlc-home && "
          "python3 -m runtime_bench.gpu_check --out \"$OUT\"")


if __name__ == "__main__":
    main()
