"""Bench rows stay about one model: storage only where the artifact is the model timed, predictions
only where the accuracy was reused from the same computation."""

from runtime_bench.harness import Variant
from tlc_export.tasks.classification.stages.bench import stamp_identity


def _variant() -> Variant:
    v = Variant(variant="4L-256H.s00.b4", source="x.safetensors", storage_bytes=1_000_000)
    v.known_accuracy = {"dev": 0.6, "test": 0.62}
    v.known_accuracy_backends = (("torch-eager", "cpu", "fp32"),)
    return v


def test_a_backend_that_requantizes_reports_no_artifact_storage():
    row = {"backend": "torch-int4", "device": "cuda", "dtype": "fp32", "storage_bytes": 1_000_000,
           "packed_code_bytes": 500_000, "accuracy_source": "dev: measured (600 examples)"}
    stamp_identity(row, _variant(), "compress/x.predictions.npz")
    assert row["storage_bytes"] is None and row["packed_code_bytes"] is None and "re-quantizes" in row["storage_note"]
    assert "predictions" not in row  # measured through the re-quantized model, not the artifact's predictions


def test_reused_accuracy_points_at_the_predictions_it_came_from():
    row = {"backend": "torch-eager", "device": "cpu", "dtype": "fp32", "storage_bytes": 1_000_000,
           "accuracy_source": "dev: reused from compress; test: reused from compress"}
    stamp_identity(row, _variant(), "compress/x.predictions.npz")
    assert row["predictions"] == "compress/x.predictions.npz" and row["storage_bytes"] == 1_000_000
    measured = {**row, "accuracy_source": "dev: reused from compress; test: measured (617 examples)"}
    del measured["predictions"]
    stamp_identity(measured, _variant(), "compress/x.predictions.npz")
    assert "predictions" not in measured
