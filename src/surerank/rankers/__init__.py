"""Ranker implementations, each registered in :mod:`surerank.registry`, grouped by family (disjoint dependencies).

- :mod:`.encoders`: transformer encoders (embedding, cross-encoder, T5) on ONNX Runtime or torch;
- :mod:`.llm`: LLM prompting methods over the backends of :mod:`surerank.llm`;
- :mod:`.generated`: selectors among generated candidates (MBR, QE, vote, execution, coder-reviewer);
- here: BM25, the first stage's own scores, fusion of other rankers, and :mod:`.nested` (how a ranker that
  runs other rankers takes them).

The old flat module paths (``surerank.rankers.embedding``, ``surerank.rankers.llm_pointwise``,
``surerank.rankers.utilities``, ...) are deprecation aliases of their new homes.
"""
