"""surerank.llm."""
