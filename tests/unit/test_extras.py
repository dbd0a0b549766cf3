"""ONNX Runtime and TensorRT extras, installed by pip into fresh virtual environments.

pyproject.toml's real requirements (core and extras, those naming ONNX Runtime or TensorRT) are
written into a stand-in `tlc-export` wheel; stand-in `onnxruntime`, `onnxruntime-gpu` and
`tensorrt-cu1x` wheels each write the module the real one writes (`onnxruntime` for both ONNX
Runtimes: the clash the extras must avoid) and report their providers and CUDA version. pip's own
resolver installs them offline; `pip check` and the providers the importable module reports are
read in the fresh environment, and `tlc_export.runtimes` judges it there.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import tomllib

from tlc_export.runtimes import image_problems, onnxruntime_problem, tensorrt_cuda_major

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = re.compile(r"^(onnxruntime|tensorrt|tlc-export)")


def _wheel(folder: Path, name: str, version: str, files: dict[str, str], requires: list[str] = (),
           extras: list[str] = ()) -> None:
    dist = name.replace("-", "_")
    info = f"{dist}-{version}.dist-info"
    meta = (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
            + "".join(f"Provides-Extra: {e}\n" for e in extras) + "".join(f"Requires-Dist: {r}\n" for r in requires))
    files = {**files, f"{info}/METADATA": meta,
             f"{info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n"}
    record = []
    for path, text in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(text.encode())}")
    record.append(f"{info}/RECORD,,")
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as z:
        for path, text in files.items():
            z.writestr(path, text)
        z.writestr(f"{info}/RECORD", "\n".join(record) + "\n")


def _ort(providers: list[str], cuda: str) -> dict[str, str]:
    return {"onnxruntime/__init__.py": f"__version__ = 'stub'\ndef get_available_providers():\n    return {providers!r}\n",
            "onnxruntime/capi/__init__.py": "",
            "onnxruntime/capi/build_and_package_info.py": f"cuda_version = {cuda!r}\n"}


def _project_requirements() -> tuple[list[str], list[str]]:
    """pyproject.toml's requirements that name ONNX Runtime, TensorRT or the project itself, as
    Requires-Dist lines (extras as markers), and the extras they belong to."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    core = [r for r in project["dependencies"] if RUNTIME.match(r)]
    out, extras = list(core), []
    for extra, reqs in project["optional-dependencies"].items():
        mine = [r for r in reqs if RUNTIME.match(r)]
        if mine:
            extras.append(extra)
            out += [f'{r}; extra == "{extra}"' for r in mine]
    return out, extras


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("wheels")
    requires, extras = _project_requirements()
    _wheel(folder, "tlc-export", "0.1.0", {"tlc_export_stub/__init__.py": ""}, requires, extras)
    _wheel(folder, "onnxruntime", "1.26.0", _ort(["CPUExecutionProvider"], ""))
    for version, cuda in (("1.26.0", "12.8"), ("1.27.0", "13.0")):
        _wheel(folder, "onnxruntime-gpu", version,
               _ort(["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"], cuda))
    for major in ("12", "13"):
        _wheel(folder, f"tensorrt-cu{major}", "10.16.0", {"tensorrt/__init__.py": "__version__ = '10.16.0'\n"})
    return folder


def _fresh_install(tmp: Path, wheels: Path, spec: str) -> dict:
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    pip = [sys.executable, "-m", "pip", "--python", str(py), "--disable-pip-version-check"]
    # Without PYTHONPATH: a checkout on it holds the real project's metadata (an editable install's egg-info),
    # which pip would take as tlc-export already installed in the fresh venv, with all its real requirements.
    pip_env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    subprocess.run([*pip, "install", "-q", "--no-index", "--find-links", str(wheels), spec], check=True,
                   capture_output=True, text=True, env=pip_env)
    check = subprocess.run([*pip, "check"], capture_output=True, text=True, env=pip_env)
    probe = ("import json, onnxruntime as o, onnxruntime.capi.build_and_package_info, tlc_export.runtimes as r\n"
             "print(json.dumps({'providers': o.get_available_providers(), 'dists': r.ort_distributions(),\n"
             "  'problem': r.onnxruntime_problem(), 'ort_cuda': o.capi.build_and_package_info.cuda_version,\n"
             "  'trt_cuda': r.tensorrt_cuda_major()}))")
    # Only the repository on the path (for tlc_export.runtimes, standard library only): not this venv's packages.
    env = {"PATH": os.environ.get("PATH", ""), "PYTHONPATH": str(ROOT), "PYTHONNOUSERSITE": "1"}
    out = subprocess.run([str(py), "-c", probe], capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    return {**json.loads(out.stdout), "pip_check": check.returncode, "pip_check_out": check.stdout}


def test_no_onnxruntime_or_tensorrt_in_the_core_dependencies() -> None:
    requires, extras = _project_requirements()
    assert not [r for r in requires if "extra ==" not in r]
    assert {"cpu", "ort-cu12", "ort-cu13", "tensorrt-cu12", "tensorrt-cu13"} <= set(extras)


# gpu-cu1x names ort-cu1x and tensorrt-cu1x (the project's own extras): those are installed through it.
@pytest.mark.parametrize("extra, dist, providers, cuda, trt", [
    ("cpu", {"onnxruntime": "1.26.0"}, ["CPUExecutionProvider"], "", None),
    ("gpu-cu12", {"onnxruntime-gpu": "1.26.0"}, ["CUDAExecutionProvider"], "12.8", "12"),
    ("gpu-cu13", {"onnxruntime-gpu": "1.27.0"}, ["CUDAExecutionProvider"], "13.0", "13"),
])
def test_each_extra_installs_one_onnxruntime_of_its_cuda(tmp_path: Path, wheels: Path, extra: str, dist: dict,
                                                         providers: list, cuda: str, trt: str | None) -> None:
    got = _fresh_install(tmp_path, wheels, f"tlc-export[{extra}]")
    assert got["pip_check"] == 0, got["pip_check_out"]
    assert got["dists"] == dist and got["problem"] is None
    assert set(providers) <= set(got["providers"]) and got["ort_cuda"] == cuda and got["trt_cuda"] == trt


def test_cpu_and_gpu_together_is_refused(tmp_path: Path, wheels: Path) -> None:
    """pip cannot forbid two extras together, so the clash is detected where it matters: the module that won
    is one of two, and `tlc_export.runtimes` names both and the fix (the GPU image's build fails on it)."""
    got = _fresh_install(tmp_path, wheels, "tlc-export[cpu,ort-cu13]")
    assert set(got["dists"]) == {"onnxruntime", "onnxruntime-gpu"}
    assert "2 ONNX Runtime distributions" in got["problem"] and "pip uninstall -y onnxruntime onnxruntime-gpu" in got["problem"]


def test_onnxruntime_problem_and_image_rules() -> None:
    assert onnxruntime_problem({"onnxruntime-gpu": "1.27.0"}) is None
    good = {"ort_distributions": {"onnxruntime-gpu": "1.27.0"}, "ort_providers": ["CUDAExecutionProvider"],
            "ort_cuda": "13.0", "torch": "2.9.0a0", "torch_cuda": "13.0", "tensorrt": "10.13.3", "tensorrt_cuda": None,
            "builder_ok": True, "gpu_visible": True, "pip_check": []}
    assert image_problems(good, gpu=True, builder="require") == []
    cases = {
        "lacks CUDAExecutionProvider": {"ort_providers": ["CPUExecutionProvider"]},
        "ort cuda 12.8 does not pair with torch's CUDA 13.0": {"ort_cuda": "12.8"},
        "tensorrt cuda 12 does not pair": {"tensorrt_cuda": "12"},
        "cannot create a builder": {"builder_ok": False, "builder_error": "CUDA initialization failure"},
        "not a CUDA build": {"torch_cuda": None},
        "pip check: onnxruntime-gpu": {"pip_check": ["onnxruntime-gpu 1.27.0 requires protobuf, which is not installed."]},
    }
    for needle, change in cases.items():
        problems = image_problems({**good, **change}, gpu=True, builder="require")
        assert any(needle in p for p in problems), (needle, problems)
    # No GPU at build time: the builder is required only with `require`.
    no_gpu = {**good, "builder_ok": False, "gpu_visible": False}
    assert image_problems(no_gpu, gpu=True, builder="if-gpu") == []
    assert image_problems(no_gpu, gpu=True, builder="require") != []
    # A CPU image needs no CUDA provider, but still exactly one ONNX Runtime.
    cpu = {"ort_distributions": {"onnxruntime": "1.32.0"}, "ort_providers": ["CPUExecutionProvider"], "pip_check": []}
    assert image_problems(cpu, gpu=False, builder="require") == []
    assert image_problems({**cpu, "ort_distributions": {}}, gpu=False, builder="require") != []


def test_tensorrt_flavour_from_the_installed_wheel() -> None:
    assert tensorrt_cuda_major(lambda d: "10.16.0" if d == "tensorrt-cu13" else None) == "13"
    assert tensorrt_cuda_major(lambda d: None) is None  # NGC's own TensorRT: matched by NVIDIA, not checked
