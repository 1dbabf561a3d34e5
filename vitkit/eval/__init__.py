"""Evaluation: top-k accuracy, per-class accuracy and confusion matrices (`metrics`), evaluating a checkpoint over
a data set (`evaluate`), few-shot linear evaluation and a linear probe on frozen features (`fewshot`)."""
