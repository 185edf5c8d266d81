"""Adapters for RAG frameworks; each module imports its framework, so import only the one you use:

``from surerank.serve.integrations.langchain import SureRankCompressor``
``from surerank.serve.integrations.llamaindex import SureRankPostprocessor``
"""
