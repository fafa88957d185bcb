"""Benchmarks that print ratios measured side by side in one run (see each script's docstring)."""
