"""Ranker implementations, each registered in :mod:`surerank.registry`, grouped by family (disjoint dependencies).

- :mod:`.encoders`: transformer encoders (embedding, cross-encoder, T5) on ONNX Runtime or torch;
- :mod:`.llm`: LLM prompting methods over the backends of :mod:`surerank.llm`;
- :mod:`.generated`: selectors among generated candidates (MBR, QE, vote, execution, coder-reviewer);
- here: BM25, the first stage's own scores, and fusion of other rankers.
"""
