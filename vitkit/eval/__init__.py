"""Evaluation: top-k accuracy, few-shot linear evaluation, linear probe."""
