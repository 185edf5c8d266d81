"""Encoder rankers: transformer models scored in one forward pass (bi-encoder, cross-encoder, T5).

They need a model and ONNX Runtime or torch (:mod:`surerank.engine`); nothing here calls an LLM.
"""
