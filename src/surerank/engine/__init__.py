"""surerank.engine."""
