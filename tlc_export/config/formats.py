"""What the translation family can produce, as plain tuples (no pydantic: the family, which `tlc predict`
loads, reads them too). Recipe validation checks `export.formats` and `bench.backends` against them."""

# The encoder/decoder pair in ONNX Runtime CPU formats, timed in PyTorch and ONNX Runtime (TensorRT and the
# torch kernels' INT8/INT4 paths are classification's).
TRANSLATION_EXPORT_FORMATS = ("onnx-fp32", "onnx-int8-dynamic", "onnx-int8", "onnx-int4")
TRANSLATION_BENCH_BACKENDS = ("torch-eager", "onnxruntime")
