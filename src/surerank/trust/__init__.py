"""surerank.trust."""
