"""Text to model inputs: tokenisation, token-budget batches, and long documents as passages."""
