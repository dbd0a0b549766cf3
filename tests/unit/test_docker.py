"""Dockerfiles: valid instructions, COPY sources that exist, the `tlc` entry point (no engine here)."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[2]
KEYWORDS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
            "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}


def _instructions(path: Path) -> list[tuple[str, str]]:
    out, buf = [], ""
    for line in path.read_text().splitlines():
        s = line.strip()
        if not buf and (not s or s.startswith("#")):
            continue
        buf += (" " if buf else "") + s.rstrip("\\").strip()
        if not s.endswith("\\"):
            word, _, rest = buf.partition(" ")
            out.append((word.upper(), rest))
            buf = ""
    assert not buf, f"{path}: trailing line continuation"
    return out


@pytest.mark.parametrize("name", ["Dockerfile.cpu", "Dockerfile.tensorrt"])
def test_dockerfile_structure(name):
    ins = _instructions(ROOT / "docker" / name)
    words = [w for w, _ in ins]
    assert set(words) <= KEYWORDS, set(words) - KEYWORDS
    first = next(w for w in words if w != "ARG")
    assert first == "FROM"
    for w, rest in ins:
        if w == "COPY":
            *srcs, _dst = shlex.split(rest)
            for s in srcs:
                assert (ROOT / s).exists(), f"{name}: COPY source {s} is not in the repository"
    ep = [rest for w, rest in ins if w == "ENTRYPOINT"]
    assert ep and json.loads(ep[-1]) == ["tlc"]
    assert "tlc" in open(ROOT / "pyproject.toml").read().split("[project.scripts]")[1].split("[")[0]
    runs = " ".join(rest for w, rest in ins if w == "RUN")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    if name.endswith("cpu"):
        assert ins[0] == ("FROM", "python:3.11-slim")
        torch_at = runs.find("torch==2.13.0")
        assert 0 <= torch_at < runs.find('pip install ".[cpu]"') and "download.pytorch.org/whl/cpu" in runs
        assert runs.rstrip().endswith("python -m tlc_export.runtimes")  # one ONNX Runtime, checked at build
    else:
        text = (ROOT / "docker" / name).read_text()
        args = dict(rest.split("=", 1) for w, rest in ins if w == "ARG" and "=" in rest)
        assert args["BASE"].startswith("nvcr.io/nvidia/pytorch:") and args["ORT_EXTRA"] in extras
        assert args["TRT_BUILDER_CHECK"] == "require"
        assert '".[${ORT_EXTRA}]"' in runs and "tensorrt-cu" not in runs  # the image's own TensorRT is kept
        # The CPU onnxruntime goes before the GPU one comes; the image's torch is pinned; then the check.
        assert runs.find("pip uninstall -y onnxruntime") < runs.find("pip install -c /tmp/keep.txt")
        check = [rest for w, rest in ins if w == "RUN"][-1]
        assert check == "python -m tlc_export.runtimes --gpu --builder ${TRT_BUILDER_CHECK}"
        # It says what it pairs: CUDA, torch, TensorRT and onnxruntime-gpu versions, and why.
        for needle in ("CUDA 13.0", "torch 2.9.0a0", "TensorRT 10.13", "onnxruntime-gpu >= 1.27", "why"):
            assert needle in text, needle


def test_gpu_extras_pair_onnxruntime_and_tensorrt_by_cuda_major() -> None:
    from packaging.requirements import Requirement

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    ort = {e: Requirement(r[0]) for e, r in extras.items() if e.startswith("ort-")}
    # PyPI's onnxruntime-gpu: CUDA 12 builds up to 1.26, CUDA 13 from 1.27.
    assert ort["ort-cu12"].specifier.contains("1.26.0") and not ort["ort-cu12"].specifier.contains("1.27.0")
    assert ort["ort-cu13"].specifier.contains("1.27.0") and not ort["ort-cu13"].specifier.contains("1.26.0")
    for major in ("12", "13"):
        (trt,) = extras[f"tensorrt-cu{major}"]
        assert Requirement(trt).name == f"tensorrt-cu{major}"
        assert Requirement(extras[f"gpu-cu{major}"][0]).extras == {f"ort-cu{major}", f"tensorrt-cu{major}"}
    assert "tensorrt" not in extras and "gpu" not in extras  # no unflavoured TensorRT or ONNX Runtime GPU


def _docker_runs(text: str) -> list[list[str]]:
    """Every `docker run …` command in a Markdown text (line continuations joined), as words."""
    joined = text.replace("\\\n", " ")
    return [shlex.split(line.strip()) for line in joined.splitlines() if line.strip().startswith("docker run")]


@pytest.mark.parametrize("doc", ["README.md", "docker/README.md"])
def test_docker_run_examples_find_their_recipe(doc):
    """What a documented `docker run` names under /work (its recipe) is in the image or mounted, the image
    has the registry client the built-in corpus needs, and the data cache it mounts is TLC_HOME."""
    runs = [w for w in _docker_runs((ROOT / doc).read_text()) if any(x.startswith("tlc:") for x in w)]
    assert len(runs) == 2, f"{doc}: expected the CPU and the TensorRT image's run example"
    for words in runs:
        image = next(w for w in words[2:] if w.startswith("tlc:"))
        dockerfile = ROOT / "docker" / {"tlc:cpu": "Dockerfile.cpu", "tlc:trt": "Dockerfile.tensorrt"}[image]
        ins = _instructions(dockerfile)
        workdir = [rest for w, rest in ins if w == "WORKDIR"][-1]
        copied = {shlex.split(rest)[-1] for w, rest in ins if w == "COPY"}
        mounts = {words[i + 1].split(":")[1] for i, w in enumerate(words) if w == "-v"}
        args = words[words.index(image) + 1:]
        assert args[0] == "run"
        recipe = args[1]
        top = f"{workdir}/{recipe.split('/')[0]}"
        assert top in copied | mounts, (doc, words, copied, mounts)  # in the image, or mounted into it
        assert (ROOT / recipe).is_file(), f"{doc}: {recipe} is not in the repository's recipes/"
        env = " ".join(rest for w, rest in ins if w == "ENV")
        assert "TLC_HOME=/work/cache" in env and "/work/cache" in mounts
        assert "install -y --no-install-recommends npm" in " ".join(rest for w, rest in ins if w == "RUN")
