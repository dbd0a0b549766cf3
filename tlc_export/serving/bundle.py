"""A serving bundle on disk: the files `tlc package` writes and `tlc predict` reads.

```
BUNDLE/model.onnx            (+ model.onnx.data when the weights exceed 2 GB)
BUNDLE/config.json           HF config with id2label / label2id
BUNDLE/tokenizer.json, tokenizer_config.json, special_tokens_map.json
BUNDLE/tlc.json              provenance (schema below, `tlc_export.tasks.classification.package.bundle`)
BUNDLE/README.md
BUNDLE/triton/<name>/config.pbtxt, triton/<name>/1/model.onnx | model.plan
```

A translation bundle (tlc.json `family: translation`, `tlc_export.tasks.translation.serving.translator`) holds
encoder.onnx, decoder.onnx, tokenizer/ (the run's translation tokenizer folder), tlc.json and README.md.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tlc_export.data.fetch import sha256_file
from tlc_export.errors import TlcError

MODEL_FILE = "model.onnx"
META_FILE = "tlc.json"
CONFIG_FILE = "config.json"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
BUNDLE_FILES = (MODEL_FILE, CONFIG_FILE, *TOKENIZER_FILES, META_FILE, "README.md")
SCHEMA = 1
FIX = "re-create it with `tlc package RUN_DIR --out BUNDLE --force`"


class BundleError(TlcError):
    """A bundle is missing or damaged; the message names the file and the fix."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise BundleError(f"{path}: missing; this is not a complete bundle; {FIX}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise BundleError(f"{path}: not valid JSON ({e}); {FIX}") from e
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object; {FIX}")
    return data


def read_meta(root: str | Path) -> dict[str, Any]:
    """A bundle folder's tlc.json, with clear errors for a missing folder or file."""
    root = Path(root)
    if not root.exists():
        raise BundleError(f"{root}: no such bundle folder; create one with `tlc package RUN_DIR --out {root}`")
    if not root.is_dir():
        raise BundleError(f"{root}: not a folder; a bundle is the folder `tlc package` writes")
    if not (root / META_FILE).exists() and (root / "manifest.json").is_file():
        raise BundleError(f"{root}: this is a run directory, not a bundle; package it first with "
                          f"`tlc package {root} --out BUNDLE --max-storage-mb MB` (or --variant NAME), "
                          "then `tlc predict BUNDLE …`")
    return _read_json(root / META_FILE)


def bundle_family(root: str | Path) -> str:
    """The task family whose bundle this is (tlc.json `family`; bundles from before families are classification's)."""
    return str(read_meta(root).get("family") or "classification")


def verify_files(root: Path, files: dict[str, Any]) -> None:
    """Every file tlc.json lists (`{relative path: {bytes, sha256}}`) is there with that size and SHA-256."""
    for rel, want in files.items():
        path = root / rel
        if not path.is_file():
            raise BundleError(f"{path}: missing; this is not a complete bundle; {FIX}")
        size = path.stat().st_size
        if want.get("bytes") is not None and size != int(want["bytes"]):
            raise BundleError(f"{path}: {size} bytes, but tlc.json records {want['bytes']} (truncated or replaced); {FIX}")
        if want.get("sha256") and sha256_file(path) != want["sha256"]:
            raise BundleError(f"{path}: SHA-256 differs from the one tlc.json records (file changed or corrupt); {FIX}")


@dataclass
class Bundle:
    """An opened bundle: its folder, provenance, HF config, label names and tokenizer length."""

    root: Path
    meta: dict[str, Any]
    config: dict[str, Any]
    labels: list[str]
    max_length: int

    @property
    def model_path(self) -> Path:
        return self.root / MODEL_FILE

    @classmethod
    def open(cls, root: str | Path, verify: bool = True) -> Bundle:
        """Read and check a bundle folder. `verify` also compares model.onnx with the size and
        SHA-256 recorded in tlc.json (a truncated or replaced file is reported, not run)."""
        root = Path(root)
        meta = read_meta(root)
        config = _read_json(root / CONFIG_FILE)
        for name in (MODEL_FILE, "tokenizer.json"):
            if not (root / name).is_file():
                raise BundleError(f"{root / name}: missing; {FIX}")
        id2label = config.get("id2label")
        if not isinstance(id2label, dict) or not id2label:
            raise BundleError(f"{root / CONFIG_FILE}: no id2label (label names); {FIX}")
        try:
            labels = [str(id2label[k]) for k in sorted(id2label, key=lambda k: int(k))]
        except ValueError as e:
            raise BundleError(f"{root / CONFIG_FILE}: id2label keys must be integers ({e}); {FIX}") from e
        max_length = meta.get("max_length") or config.get("max_position_embeddings", 514) - 2
        bundle = cls(root, meta, config, labels, int(max_length))
        if verify:
            bundle.verify_model()
        return bundle

    def verify_model(self) -> None:
        """model.onnx has the size and SHA-256 tlc.json recorded (when it recorded them)."""
        want = self.meta.get("model_file") or {}
        path = self.model_path
        size = path.stat().st_size
        if want.get("bytes") is not None and size != int(want["bytes"]):
            raise BundleError(f"{path}: {size} bytes, but tlc.json records {want['bytes']} (truncated or replaced); {FIX}")
        if want.get("sha256") and sha256_file(path) != want["sha256"]:
            raise BundleError(f"{path}: SHA-256 differs from the one tlc.json records (file changed or corrupt); {FIX}")
        if want.get("external_data"):
            data = self.root / str(want["external_data"])
            if not data.is_file():
                raise BundleError(f"{data}: missing (model.onnx keeps its weights there); {FIX}")
            if want.get("external_data_sha256") and sha256_file(data) != want["external_data_sha256"]:
                raise BundleError(f"{data}: SHA-256 differs from the one tlc.json records (file changed or corrupt); {FIX}")
