"""The torch-free serving side: tokenization against transformers, length batching, input files, GPU checks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from tlc_export.errors import TlcError
from tlc_export.serving.inputs import InputFileError, label_ids, read_inputs, skipped_note
from tlc_export.tokens import ServingTokenizer, length_batches, pad_batch

TEXTS = ["The film was wonderful, really.", "", "dull " * 80, "A  moving,\tfunny story; its music? Charming!",
         "unicode: café naïve — ok"]


@pytest.fixture(scope="module")
def bpe_dir(tmp_path_factory) -> Path:
    """A byte-level BPE tokenizer trained the way the data stage trains one, saved as the run saves it."""
    from tlc_export.config.data import TokenizerConfig
    from tlc_export.data.tokenizer import train_tokenizer

    tmp = tmp_path_factory.mktemp("tok")
    docs = [f"{t} the story of a film number {i} was {'great' if i % 2 else 'awful'}." for i, t in enumerate(TEXTS * 40)]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TLC_HOME", str(tmp / "home"))
        train_tokenizer(docs, TokenizerConfig(vocab_size=300), tmp / "tok", model_max_length=64)
    return tmp / "tok"


@pytest.mark.parametrize("max_length", [8, 64])
def test_serving_tokenizer_matches_transformers(bpe_dir: Path, max_length: int) -> None:
    from transformers import AutoTokenizer

    ref = AutoTokenizer.from_pretrained(str(bpe_dir))
    tok = ServingTokenizer.from_dir(bpe_dir, max_length)
    assert tok.pad_id == ref.pad_token_id
    assert tok.encode(TEXTS) == ref(TEXTS, truncation=True, max_length=max_length)["input_ids"]
    pairs = ["second text " * (i * 7) for i in range(len(TEXTS))]
    assert tok.encode(TEXTS, pairs) == ref(TEXTS, pairs, truncation=True, max_length=max_length)["input_ids"]


def test_serving_tokenizer_names_missing_files(tmp_path: Path, bpe_dir: Path) -> None:
    with pytest.raises(TlcError, match="tokenizer.json: missing"):
        ServingTokenizer.from_dir(tmp_path, 16)
    (tmp_path / "tokenizer.json").write_text((bpe_dir / "tokenizer.json").read_text())
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"pad_token": "<nope>"}))
    with pytest.raises(TlcError, match="pad token '<nope>' is not in the vocabulary"):
        ServingTokenizer.from_dir(tmp_path, 16)


def test_length_batches_sort_stably_and_pad_to_each_batch() -> None:
    lengths = [5, 2, 9, 2, 5, 1, 7]
    batches = length_batches(lengths, 3)
    assert [b.tolist() for b in batches] == [[5, 1, 3], [0, 4, 6], [2]]
    ids = [[7] * n for n in lengths]
    x, m = pad_batch(ids, batches[1], pad_id=1)
    assert x.shape == (3, 7) and x.dtype == np.int64
    assert m.sum(1).tolist() == [5, 5, 7] and (x[m == 0] == 1).all() and (x[m == 1] == 7).all()
    with pytest.raises(ValueError):
        length_batches(lengths, 0)


def test_read_inputs_csv_jsonl_and_errors(tmp_path: Path) -> None:
    csv_file = tmp_path / "in.csv"
    csv_file.write_text("review,gold\n\"good, really\",pos\nbad,0\n")
    t = read_inputs(csv_file, "review", label_column="gold")
    assert t.texts == ["good, really", "bad"] and t.labels == ["pos", "0"] and t.lines == [2, 3]
    assert label_ids(t.labels, ["neg", "pos"], csv_file, t.lines, "gold") == [1, 0]
    with pytest.raises(InputFileError, match=r"in.csv:3: 'gold' is 'maybe', not one of the bundle's labels"):
        label_ids(["pos", "maybe"], ["neg", "pos"], csv_file, [2, 3], "gold")
    with pytest.raises(InputFileError, match=r"no column 'text' \(columns: 'review', 'gold'\); pass --text-column"):
        read_inputs(csv_file)
    jl = tmp_path / "in.jsonl"
    jl.write_text('{"text": "a", "pair": "b"}\n\n{"text": "c"}\n')
    t = read_inputs(jl, pair_column="pair")
    assert t.texts == ["a", "c"] and t.pairs == ["b", None] and t.lines == [1, 3]
    jl.write_text('{"text": "a"}\n{"text": 3}\n')
    with pytest.raises(InputFileError, match=r"in.jsonl:2: 'text' is int, expected text"):
        read_inputs(jl)
    jl.write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(InputFileError, match=r"in.jsonl:2: not valid JSON"):
        read_inputs(jl)
    with pytest.raises(InputFileError, match="unknown file type '.xlsx'"):
        (tmp_path / "in.xlsx").write_text("x")
        read_inputs(tmp_path / "in.xlsx")
    txt = tmp_path / "in.txt"
    txt.write_text("first sentence, with a comma\n\n  \n\"quoted\" second\n")
    t = read_inputs(txt)
    assert t.texts == ["first sentence, with a comma", '"quoted" second'] and t.lines == [1, 4]
    assert t.skipped == [2, 3]  # said, so the output rows can be matched to the input lines
    assert skipped_note(t, txt) == (f"{txt}: skipped 2 blank line(s) (line 2, 3); the output has one row per "
                                    "non-blank line, in order")
    (blank := tmp_path / "blank.txt").write_text("\n \n")
    with pytest.raises(InputFileError, match="only blank lines"):
        read_inputs(blank)
    (latin := tmp_path / "latin.txt").write_bytes("caf\u00e9 ok\n".encode() + "na\u00efve\n".encode("latin-1"))
    with pytest.raises(InputFileError, match=r"latin.txt:2: not UTF-8 text \(byte 0xef\); save it as UTF-8") as e:
        read_inputs(latin)
    assert "\n" not in str(e.value)
    with pytest.raises(InputFileError, match=r"no column 'ref' \(columns: 'text'\); pass --reference-column"):
        read_inputs(txt, label_column="ref", label_flag="--reference-column")
    with pytest.raises(InputFileError, match="no such file"):
        read_inputs(tmp_path / "absent.csv")


def test_engine_gpu_check() -> None:
    from tlc_export.package.gpu import EngineGpuMismatch, check_engine_gpu

    row = {"path": "e.engine", "tensorrt_version": "10.13", "gpu": {"name": "NVIDIA H200", "compute_capability": "9.0"}}
    same = check_engine_gpu(row, False, here={"name": "NVIDIA H200", "compute_capability": "9.0"})
    assert same["gpu_check"] == "same GPU"
    with pytest.raises(EngineGpuMismatch, match=r"built on NVIDIA H200 \(sm 9.0\) but this machine has NVIDIA H100"):
        check_engine_gpu(row, False, here={"name": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"})
    with pytest.raises(EngineGpuMismatch, match="does not record the GPU"):
        check_engine_gpu({**row, "gpu": None}, False, here={"name": "NVIDIA H200", "compute_capability": "9.0"})
    forced = check_engine_gpu(row, True, here={"name": "NVIDIA L4", "compute_capability": "8.9"})
    assert forced["gpu_check"].startswith("forced (--allow-other-gpu)")


def test_export_scores_with_the_batches_tlc_predict_uses(bpe_dir: Path) -> None:
    """The export stage's accuracy batches are predict's length batches; per-row results return to example order."""
    from transformers import AutoTokenizer

    from tlc_export.export.validate import encode_by_length, in_example_order
    from tlc_export.finetune.toy import ToyExample

    examples = [ToyExample(t, i % 2) for i, t in enumerate(TEXTS * 3)]
    batches = encode_by_length(bpe_dir, examples, 16, 4)
    ref = AutoTokenizer.from_pretrained(str(bpe_dir))([e.text for e in examples], truncation=True, max_length=16)["input_ids"]
    widths = [b.input_ids.shape[1] for b in batches]
    assert widths == sorted(widths) and sum(len(b.index) for b in batches) == len(examples)
    for b in batches:
        for row, i in enumerate(b.index):
            n = int(b.attention_mask[row].sum())
            assert b.input_ids[row, :n].tolist() == ref[i]
    np.testing.assert_array_equal(in_example_order([b.labels for b in batches], batches), [e.label for e in examples])
