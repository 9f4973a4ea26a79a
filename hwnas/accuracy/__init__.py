"""Accuracy evaluators: the ``accuracy`` metric of a candidate network.

    get_accuracy("table:cifar100").evaluate(space, genome) -> 73.5

Four are built in, one module each, registered when this package is imported:

* ``table`` (:mod:`~hwnas.accuracy.table`): the published NAS-Bench-201 test accuracies,
  looked up by NB201 index; nb201 only.
* ``train`` (:mod:`~hwnas.accuracy.train`): a short real training of the network (seeded, no
  download) on scikit-learn's bundled digits resized to the network's input, or on a user's
  ``.npz`` (:mod:`~hwnas.accuracy.data`); top-1 % on the held-out split.
* ``proxy`` (:mod:`~hwnas.accuracy.proxy`): a zero-cost proxy on one batch, NASWOT or synflow;
  **a score, not a percentage** (``is_percentage`` is False).
* ``supernet`` (:mod:`~hwnas.accuracy.supernet`): a subnet of a weight-sharing supernet trained once
  on the user's data (``hwnas supernet train``), inherited weights, batch norm recalibrated; top-1 %.

The contract and the registry are in :mod:`~hwnas.accuracy.registry`;
``get_accuracy("train", max_steps=30)`` returns an evaluator, ``accuracy_names()`` lists them.
"""

from hwnas.accuracy.registry import AccuracyEvaluator, AccuracyResult, accuracy_names, get_accuracy, register_accuracy
from hwnas.accuracy import proxy, supernet, table, train  # noqa: F401  (registers the built-in evaluators)

__all__ = ["AccuracyEvaluator", "AccuracyResult", "accuracy_names", "get_accuracy", "register_accuracy"]
