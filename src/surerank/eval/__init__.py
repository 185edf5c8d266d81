"""surerank.eval."""
