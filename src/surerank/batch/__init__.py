"""surerank.batch."""
