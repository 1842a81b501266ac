"""Training: the extended Trainer, one-stage runs, multi-stage pipelines."""
