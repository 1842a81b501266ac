"""Models: loading and building LLaVA, adapters, checkpoint conversion."""
