"""Ranker implementations, one module per family; each is registered in :mod:`surerank.registry`."""
