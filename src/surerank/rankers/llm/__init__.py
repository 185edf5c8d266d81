"""LLM rankers: pointwise, pairwise, setwise, listwise and JointRank prompting of an LLM backend.

The backends themselves live in :mod:`surerank.llm`; these modules turn their answers into an order.
"""
