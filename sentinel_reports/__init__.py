"""Render SUPPORTED_MODELS.md and an HTML report from the matrix's result records (results/*.jsonl)."""
