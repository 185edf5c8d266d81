"""Test doubles that ship with surerank, so users can test their pipelines offline: a deterministic stand-in LLM
judge (:mod:`surerank.testing.judge`, also the ``"judge"`` LLM backend) and an OpenAI-compatible HTTP server
that answers from it and injects faults (:mod:`surerank.testing.llm_server`).  Nothing in the library's ranking
path imports this package."""
