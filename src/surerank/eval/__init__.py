"""Evaluation: file formats, benchmark datasets, metrics and significance.

Nothing here calls a model: evaluation reads runs and judgments only.
"""
