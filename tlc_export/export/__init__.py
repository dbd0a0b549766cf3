"""Export: ONNX formats derived from one exported graph, TensorRT engines, and their validation."""
