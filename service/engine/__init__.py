"""onnxruntime sessions, execution-provider choice and cross-request micro-batching."""
