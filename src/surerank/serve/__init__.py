"""surerank.serve."""
