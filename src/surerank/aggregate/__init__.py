"""surerank.aggregate."""
