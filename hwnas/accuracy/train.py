"""The ``train`` evaluator: top-1 % after a short seeded training (no download) on scikit-learn's
bundled digits resized to the network's input, or on a user's ``.npz``; batch-norm statistics are
re-estimated before the held-out split is scored, by the float network or by the network a target
deploys.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from hwnas.accuracy.data import ImageData, check_classes, data_option, image_data, to_input
from hwnas.accuracy.registry import (
    AccuracyEvaluator,
    Deploy,
    choice_option,
    fraction_option,
    int_option,
    positive_float_option,
    register_accuracy,
    threads_option,
    torch_threads,
)
from hwnas.arch import ArchSpace

__all__ = ["OPTIMIZERS", "TrainAccuracy"]

OPTIMIZERS: tuple[str, ...] = ("sgd", "adam")
_DEFAULT_LR = {"sgd": 0.1, "adam": 0.002}


@register_accuracy
class TrainAccuracy(AccuracyEvaluator):
    """Top-1 % after a short seeded training on digits (bundled with scikit-learn) or a user's .npz.

    The network is built from ``seed``, trained with mini-batches in an order
    drawn from ``seed`` for ``epochs`` epochs, or fewer steps when
    ``max_steps`` or the wall-clock ``time_budget_s`` is reached first, then
    batch-norm statistics are re-estimated on ``bn_batches`` training batches
    (after a few dozen steps the running averages lag behind the weights) and
    the network is evaluated on the held-out split. Only the first
    ``data classes`` logits are used, so a network with more outputs than the
    data has classes trains as is.

    The time budget covers training only (not the evaluation) and is checked
    after each step, so one slow step (the first one of a process pays for
    oneDNN's set-up) may overrun it.

    Determinism: the same settings give the same accuracy on the same machine
    and thread count when training ends by ``epochs`` or ``max_steps``; when
    the time budget ends it, the number of steps (in the details) depends on
    the machine's speed.
    """

    name = "train"
    description = "short seeded training on digits (bundled) or a user .npz; top-1 % on the held-out split"
    spec_option = "data"
    uses_deployment = True
    #: training images that calibrate a deployed (quantized) network
    calibration_images = 64
    #: trained networks kept in this process (genome -> weights and training facts), so that deploying one
    #: architecture with several numerics (bit-widths) trains it once
    keep_trained = 4

    def __init__(
        self,
        *,
        data: str | os.PathLike[str] | None = None,
        epochs: int = 1,
        time_budget_s: float | None = 10.0,
        max_steps: int | None = None,
        batch_size: int = 32,
        optimizer: str = "adam",
        lr: float | None = None,
        momentum: float = 0.9,
        weight_decay: float = 5e-4,
        seed: int = 0,
        split_seed: int = 0,
        test_fraction: float = 0.25,
        bn_batches: int = 4,
        threads: int | None = 1,
    ) -> None:
        """Options: ``data`` ("digits" or an .npz path with ``x_train, y_train, x_test, y_test``),
        ``epochs``, ``time_budget_s`` (seconds of training per candidate, None for no limit),
        ``max_steps`` (None for no limit), ``batch_size``, ``optimizer`` (adam or sgd), ``lr``
        (default 0.002 for adam, 0.1 for sgd), ``momentum`` (sgd, Nesterov), ``weight_decay``,
        ``seed`` (weights and batch order), ``split_seed`` and ``test_fraction`` (digits' split),
        ``bn_batches`` (training batches that re-estimate batch-norm statistics, 0 for none),
        ``threads`` (torch threads while training, restored after; one by default, which keeps
        results independent of the machine's core count and suits a pool of workers; None
        leaves torch's setting).
        """
        n = self.name
        self.data = data_option(n, data)
        self.epochs = int_option(n, "epochs", epochs, minimum=1)
        self.time_budget_s = (
            None if time_budget_s is None else positive_float_option(n, "time_budget_s", time_budget_s)
        )
        self.max_steps = None if max_steps is None else int_option(n, "max_steps", max_steps, minimum=1)
        self.batch_size = int_option(n, "batch_size", batch_size, minimum=2)
        self.optimizer = choice_option(n, "optimizer", optimizer, OPTIMIZERS)
        self.lr = _DEFAULT_LR[self.optimizer] if lr is None else positive_float_option(n, "lr", lr)
        self.momentum = fraction_option(n, "momentum", momentum, zero_allowed=True)
        self.weight_decay = fraction_option(n, "weight_decay", weight_decay, zero_allowed=True)
        self.seed = int_option(n, "seed", seed, minimum=0)
        self.split_seed = int_option(n, "split_seed", split_seed, minimum=0)
        self.test_fraction = fraction_option(n, "test_fraction", test_fraction, zero_allowed=False)
        self.bn_batches = int_option(n, "bn_batches", bn_batches, minimum=0)
        self.threads = threads_option(n, threads)
        self._trained: dict[tuple, tuple[dict, dict]] = {}

    def settings(self) -> dict[str, Any]:
        data = image_data(self.data, split_seed=self.split_seed, test_fraction=self.test_fraction)
        return {
            "evaluator": self.name,
            **data.source,
            "epochs": self.epochs,
            "time_budget_s": self.time_budget_s,
            "max_steps": self.max_steps,
            "batch_size": self.batch_size,
            "optimizer": self.optimizer,
            "lr": self.lr,
            "momentum": self.momentum,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
            "bn_batches": self.bn_batches,
            "threads": self.threads,
        }

    def _make_optimizer(self, model: nn.Module) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.SGD(
            model.parameters(), lr=self.lr, momentum=self.momentum,
            nesterov=self.momentum > 0, weight_decay=self.weight_decay,
        )

    def _evaluate(
        self, space: ArchSpace, genome: tuple[int, ...], deploy: Deploy | None = None
    ) -> tuple[float, dict[str, Any]]:
        data = image_data(self.data, split_seed=self.split_seed, test_fraction=self.test_fraction)
        check_classes(data, space)
        shape = space.input_shape(genome)
        with torch_threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = space.build(genome, seed=self.seed)
            # the network's identity: space, genome, input, and the shapes of its weights (space options)
            ident = (space.name, tuple(genome), tuple(shape),
                     tuple((name, tuple(v.shape)) for name, v in model.state_dict().items()))
            kept = self._trained.get(ident)
            if kept is not None and deploy is not None:
                model.load_state_dict(kept[0])
                correct = self._count_correct_deployed(model, deploy, data, shape)
                return 100.0 * correct / len(data.y_test), {**kept[1], "deployed": True, "reused_training": True}
            facts = self._train(model, data, shape)
            trained = facts["stopped_by"] != "diverged"
            if trained:
                self._trained[ident] = ({name: v.detach().clone() for name, v in model.state_dict().items()}, facts)
                while len(self._trained) > self.keep_trained:
                    self._trained.pop(next(iter(self._trained)))
            if deploy is not None and trained:
                correct = self._count_correct_deployed(model, deploy, data, shape)
            else:
                correct = self._count_correct(model, data, shape)
        return 100.0 * correct / len(data.y_test), {**facts, "deployed": deploy is not None and trained}

    def _train(self, model: nn.Module, data: ImageData, shape: Sequence[int]) -> dict[str, Any]:
        """Train ``model`` in place and, unless the loss diverged, re-estimate its batch-norm statistics;
        the training's facts (the evaluator's details)."""
        k = data.num_classes
        n = len(data.y_train)
        bs = min(self.batch_size, n)
        optimizer = self._make_optimizer(model)
        order_gen = torch.Generator().manual_seed(self.seed)
        model.train()
        steps, epochs_done, stopped, loss_value = 0, 0, "epochs", float("nan")
        start = time.perf_counter()
        for _ in range(self.epochs):
            order = torch.randperm(n, generator=order_gen)
            for begin in range(0, n - 1, bs):  # a last batch of one image is skipped (batch norm)
                idx = order[begin : begin + bs]
                if len(idx) < 2:
                    break
                logits = model(to_input(data.x_train[idx], shape))[:, :k]
                loss = F.cross_entropy(logits, data.y_train[idx])
                if not torch.isfinite(loss):
                    stopped = "diverged"
                    break
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps += 1
                loss_value = float(loss.detach())
                if self.max_steps is not None and steps >= self.max_steps:
                    stopped = "max_steps"
                    break
                if self.time_budget_s is not None and time.perf_counter() - start >= self.time_budget_s:
                    stopped = "time_budget"
                    break
            else:
                epochs_done += 1
                continue
            break
        train_s = time.perf_counter() - start
        if stopped != "diverged":
            self._recalibrate_batchnorm(model, data, shape, order_gen)
        return {
            "steps": steps,
            "epochs_completed": epochs_done,
            "stopped_by": stopped,
            "train_s": round(train_s, 4),
            "final_loss": loss_value if math.isfinite(loss_value) else None,
            "train_samples": n,
            "test_samples": len(data.y_test),
            "classes": k,
        }

    def _recalibrate_batchnorm(
        self, model: nn.Module, data: ImageData, shape: Sequence[int], gen: torch.Generator
    ) -> None:
        """Re-estimate the batch-norm statistics on ``bn_batches`` training batches drawn with ``gen``."""
        norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
        if not norms or self.bn_batches == 0:
            return
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # cumulative average over the batches below
        order = torch.randperm(len(data.y_train), generator=gen)
        bs = min(self.batch_size, len(order))
        model.train()
        with torch.no_grad():
            for b in range(self.bn_batches):
                idx = order[b * bs : (b + 1) * bs]
                if len(idx) < 2:
                    break
                model(to_input(data.x_train[idx], shape))

    @staticmethod
    def _count_correct(model: nn.Module, data: ImageData, shape: Sequence[int]) -> int:
        """Correct test predictions of the float network."""
        model.eval()
        k = data.num_classes
        correct = 0
        with torch.no_grad():
            for begin in range(0, len(data.y_test), 256):
                logits = model(to_input(data.x_test[begin : begin + 256], shape))[:, :k]
                hit = (logits.argmax(dim=1) == data.y_test[begin : begin + 256]) & torch.isfinite(logits).all(dim=1)
                correct += int(hit.sum())
        return correct

    def _count_correct_deployed(self, model: nn.Module, deploy: Deploy, data: ImageData,
                                shape: Sequence[int]) -> int:
        """Correct test predictions of the network ``deploy`` makes of the trained ``model``
        (calibrated on the first training images)."""
        model.eval()
        calibration = to_input(data.x_train[: self.calibration_images], shape).numpy()
        predict = deploy(model, shape, calibration)
        k = data.num_classes
        correct = 0
        for begin in range(0, len(data.y_test), 256):
            x = to_input(data.x_test[begin : begin + 256], shape).numpy()
            logits = np.asarray(predict(x))[:, :k]
            hit = (logits.argmax(axis=1) == data.y_test[begin : begin + 256].numpy()) & np.isfinite(logits).all(axis=1)
            correct += int(hit.sum())
        return correct
