"""Runtime benchmark: one Backend interface over torch, ONNX Runtime and TensorRT, plus the harness
that measures latency, throughput, memory and accuracy of each model variant on each backend."""
