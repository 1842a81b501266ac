"""Evaluation: batched prediction, answer normalisation, metrics, scores and reports."""
