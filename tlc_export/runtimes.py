"""Which inference runtimes are installed, and whether they work together: the GPU image's build check.

    python -m tlc_export.runtimes [--gpu] [--builder require|if-gpu]

ONNX Runtime comes as several distributions that all write the one `onnxruntime` module; with two
installed, whichever pip wrote last wins, often the CPU one, and the CUDA provider silently vanishes
(ONNX Runtime's install docs: uninstall `onnxruntime` before installing `onnxruntime-gpu`). TensorRT,
ONNX Runtime's CUDA provider and torch must share a CUDA major version, or their libraries do not
load together. `--gpu` exits non-zero on any of these problems, so `docker build` fails instead of
shipping an image without a CUDA provider; `--builder require` also demands that TensorRT can create
a builder (which needs a visible GPU: `if-gpu` checks it only where one is visible).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import json
import subprocess
import sys
from collections.abc import Callable, Mapping
from typing import Any

# Distributions that install the `onnxruntime` module (ONNX Runtime's own packages).
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                     "onnxruntime-qnn", "onnxruntime-training")
# Packages whose `pip check` complaints concern this project's runtime stack (a base image may have others).
OURS = ("tlc-export", "torch", "onnxruntime", "onnx", "tensorrt", "transformers")


def installed(dist: str) -> str | None:
    try:
        return md.version(dist)
    except md.PackageNotFoundError:
        return None


def ort_distributions(version: Callable[[str], str | None] = installed) -> dict[str, str]:
    """{distribution: version} of every installed distribution that writes the `onnxruntime` module."""
    return {d: v for d in ORT_DISTRIBUTIONS if (v := version(d)) is not None}


def onnxruntime_problem(dists: Mapping[str, str] | None = None) -> str | None:
    """Why this ONNX Runtime install is broken (two distributions share the module), or None."""
    dists = ort_distributions() if dists is None else dists
    if len(dists) <= 1:
        return None
    names = ", ".join(f"{d} {v}" for d, v in sorted(dists.items()))
    keep = "onnxruntime-gpu" if "onnxruntime-gpu" in dists else sorted(dists)[0]
    return (f"{len(dists)} ONNX Runtime distributions are installed ({names}); they write the same `onnxruntime` "
            f"module, so the one installed last wins and its providers are all you get. Keep one: "
            f"`pip uninstall -y {' '.join(sorted(dists))} && pip install {keep}` (tlc-export's extras: [cpu], "
            "[ort-cu12] or [ort-cu13], one of them)")


def _cuda_major(version: str | None) -> str | None:
    return None if not version else str(version).split(".")[0]


def tensorrt_cuda_major(version: Callable[[str], str | None] = installed) -> str | None:
    """The CUDA major of the installed TensorRT wheel, from its flavour (tensorrt-cu12 / -cu13); None when
    TensorRT came another way (an NGC image's own build, matched to its CUDA by NVIDIA) or is absent."""
    flavours = [major for major in ("12", "13") if version(f"tensorrt-cu{major}") or version(f"tensorrt-cu{major}-libs")]
    return flavours[0] if len(flavours) == 1 else None


def image_problems(facts: Mapping[str, Any], gpu: bool, builder: str) -> list[str]:
    """Every problem in `facts` (what `gather_facts` found) for a CPU image, or a GPU image when `gpu`."""
    out = []
    if facts.get("ort_problem"):
        out.append(facts["ort_problem"])
    if not facts.get("ort_distributions"):
        out.append("no ONNX Runtime is installed: install tlc-export with [cpu], [ort-cu12] or [ort-cu13]")
    out += [f"pip check: {line}" for line in facts.get("pip_check", [])]
    if not gpu:
        return out
    providers = facts.get("ort_providers") or []
    if "CUDAExecutionProvider" not in providers:
        out.append(f"onnxruntime lacks CUDAExecutionProvider (providers: {', '.join(providers) or 'none'})")
    torch_major = _cuda_major(facts.get("torch_cuda"))
    if torch_major is None:
        out.append(f"torch {facts.get('torch')} is not a CUDA build")
    for what in ("ort_cuda", "tensorrt_cuda"):
        major = _cuda_major(facts.get(what))
        if major is not None and torch_major is not None and major != torch_major:
            out.append(f"{what.replace('_', ' ')} {facts.get(what)} does not pair with torch's CUDA {facts.get('torch_cuda')}: "
                       "their CUDA libraries do not load together; pick the flavour of torch's CUDA major")
    if facts.get("tensorrt") is None:
        out.append(f"tensorrt is not importable ({facts.get('tensorrt_error')})")
    elif builder == "require" or (builder == "if-gpu" and facts.get("gpu_visible")):
        if not facts.get("builder_ok"):
            out.append(f"TensorRT {facts.get('tensorrt')} cannot create a builder ({facts.get('builder_error')})")
    return out


def _pip_check() -> list[str]:
    proc = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True)
    if proc.returncode == 0:
        return []
    return [line for line in proc.stdout.splitlines() if any(name in line.lower() for name in OURS)]


def gather_facts() -> dict[str, Any]:
    """What is installed here: ONNX Runtime distributions and providers, torch's CUDA, TensorRT and its builder."""
    facts: dict[str, Any] = {"ort_distributions": ort_distributions(), "pip_check": _pip_check()}
    facts["ort_problem"] = onnxruntime_problem(facts["ort_distributions"])
    try:
        import onnxruntime as ort

        facts["ort_providers"] = list(ort.get_available_providers())
        info = getattr(getattr(ort, "capi", None), "build_and_package_info", None)
        facts["ort_cuda"] = getattr(info, "cuda_version", None) or None
    except Exception as exc:  # noqa: BLE001 - a broken install is a finding
        facts["ort_error"] = f"{type(exc).__name__}: {exc}"
    try:
        import torch

        facts.update(torch=torch.__version__, torch_cuda=torch.version.cuda, gpu_visible=torch.cuda.is_available())
    except Exception as exc:  # noqa: BLE001
        facts["torch_error"] = f"{type(exc).__name__}: {exc}"
    facts["tensorrt_cuda"] = tensorrt_cuda_major()
    try:
        import tensorrt as trt

        facts["tensorrt"] = trt.__version__
        try:
            builder = trt.Builder(trt.Logger(trt.Logger.WARNING))
            facts["builder_ok"] = builder is not None
            facts["builder_error"] = None if builder is not None else "trt.Builder returned None"
        except Exception as exc:  # noqa: BLE001 - no GPU, or CUDA libraries that do not match
            facts.update(builder_ok=False, builder_error=f"{type(exc).__name__}: {exc}")
    except Exception as exc:  # noqa: BLE001
        facts.update(tensorrt=None, tensorrt_error=f"{type(exc).__name__}: {exc}")
    return facts


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tlc_export.runtimes", description=__doc__.splitlines()[0])
    ap.add_argument("--gpu", action="store_true", help="a GPU image: CUDA provider, CUDA pairing and TensorRT required")
    ap.add_argument("--builder", choices=["require", "if-gpu"], default="require",
                    help="require: TensorRT must create a builder (needs a GPU); if-gpu: only where a GPU is visible")
    args = ap.parse_args(argv)
    facts = gather_facts()
    print(json.dumps(facts, indent=2, default=str))
    problems = image_problems(facts, args.gpu, args.builder)
    if args.gpu and args.builder == "if-gpu" and not facts.get("gpu_visible"):
        print("note: no GPU visible here, so TensorRT's builder was not required; check it on a GPU with "
              "`python -m tlc_export.runtimes --gpu`", file=sys.stderr)
    for p in problems:
        print(f"error: {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
