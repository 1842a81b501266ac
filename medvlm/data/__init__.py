"""Data: canonical records, readers for each published format, templates, batching."""
