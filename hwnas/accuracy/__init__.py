"""Accuracy evaluators: the NAS-Bench-201 table, short training, zero-cost proxies; and the datasets they read.

``get_accuracy("train", max_steps=30)`` returns an evaluator; ``accuracy_names()`` lists them.
"""

from hwnas.accuracy.evaluators import AccuracyEvaluator, AccuracyResult, accuracy_names, get_accuracy, register_accuracy

__all__ = ["AccuracyEvaluator", "AccuracyResult", "accuracy_names", "get_accuracy", "register_accuracy"]
