"""The accuracy fields every scored model's row carries: intervals, majority baseline, learned-task flag."""

import numpy as np
import pytest

from tlc_export.predictions import SplitPredictions
from tlc_export.scoring import accuracy_fields, pct_ci


def _split(correct: int, n: int, labels: np.ndarray) -> SplitPredictions:
    pred = labels.copy()
    pred[correct:] = 1 - pred[correct:]
    return SplitPredictions(pred, labels)


def test_interval_of_a_known_count_is_the_textbook_one():
    # Newcombe (1998), Stat. Med. 17:857, example (a): 81/263, score interval 0.2553 to 0.3662.
    labels = np.arange(263) % 2
    row = accuracy_fields({"dev": _split(81, 263, labels), "test": _split(81, 263, labels)})
    assert row["test_accuracy"] == pytest.approx(81 / 263) and row["test_n"] == 263
    lo, hi = row["test_accuracy_ci"]
    assert lo == pytest.approx(0.2553, abs=5e-5) and hi == pytest.approx(0.3662, abs=5e-5)
    assert pct_ci(row, "test") == "30.8 % [25.5, 36.6]"


def test_a_classifier_that_predicts_one_class_did_not_learn_the_task():
    labels = np.array([1] * 350 + [0] * 250)
    const = SplitPredictions(np.ones(600, dtype=np.int64), labels)
    row = accuracy_fields({"dev": const, "test": const})
    assert row["test_accuracy"] == row["majority_accuracy"] == pytest.approx(350 / 600)
    assert row["majority_label"] == 1 and row["learned_task"] is False and row["above_majority_p"] == 1.0
    good = _split(480, 600, labels)
    assert accuracy_fields({"test": good})["learned_task"] is True
