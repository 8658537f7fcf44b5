"""facegate training package: backbones, margin heads, data, the training loop and ONNX export.

Depends on ``service`` for the preprocessing contract, never the other way round.
"""
