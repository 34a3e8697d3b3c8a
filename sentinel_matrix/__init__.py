"""Sentinel's test matrix: real-asset sources that work without Hugging Face hub access."""
