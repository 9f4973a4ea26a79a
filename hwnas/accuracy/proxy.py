"""The ``proxy`` evaluator: a zero-cost proxy of accuracy on one batch, NASWOT (Mellor et al. 2021)
or synflow (Tanaka et al. 2020; Abdelfattah et al. 2021). **A proxy's value is a score, not a
percentage**: larger is better and only its order means anything (``is_percentage`` is False).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from hwnas.accuracy.data import data_option, image_data, to_input
from hwnas.accuracy.registry import (
    AccuracyEvaluator,
    choice_option,
    fraction_option,
    int_option,
    register_accuracy,
    threads_option,
    torch_threads,
)
from hwnas.arch import ArchSpace
from hwnas.errors import InvalidConfigError, RunError

__all__ = ["PROXY_KINDS", "ProxyAccuracy"]

PROXY_KINDS: tuple[str, ...] = ("naswot", "synflow")


def _replace_modules(
    model: nn.Module, match: Callable[[nn.Module], bool], make: Callable[[nn.Module], nn.Module]
) -> None:
    """Replace, in place, every submodule for which ``match`` holds by ``make(old)``."""
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if match(child):
                setattr(parent, child_name, make(child))


@register_accuracy
class ProxyAccuracy(AccuracyEvaluator):
    """A zero-cost proxy of accuracy on one batch of a freshly initialised network.

    **The value is a score, not a percentage**: larger is better and only the
    order of the values means anything.

    * ``naswot`` (Mellor et al., "Neural Architecture Search without Training",
      ICML 2021): the binary activation pattern ``c`` of every ReLU/ReLU6 on a
      batch of ``batch_size`` training images (network in training mode, batch
      statistics) gives the kernel ``K = c c^T + (1 - c)(1 - c)^T`` (units
      where two images agree); the score is ``log det(K + I)``. The unit ridge
      keeps the determinant of a degenerate network (every image with the same
      pattern) finite and small instead of ``-inf``.
    * ``synflow`` (Tanaka et al. 2020, as a proxy: Abdelfattah et al. 2021):
      every parameter replaced by its absolute value, batch norm bypassed,
      ReLU6 unclipped (ReLU), float64; ``R = sum(network(ones))``; the score is
      ``ln(1 + sum |theta * dR/dtheta|)`` over conv and linear weights (the
      log keeps the value in range; it is monotone).

    A value that is not finite (float64 overflow) is a :class:`RunError`.
    """

    name = "proxy"
    description = "zero-cost proxy (naswot or synflow) on one batch; a score, larger is better, not %"
    is_percentage = False
    spec_option = "kind"

    def __init__(
        self,
        *,
        kind: str = "naswot",
        batch_size: int = 64,
        seed: int = 0,
        data: str | os.PathLike[str] | None = None,
        split_seed: int = 0,
        test_fraction: float = 0.25,
        threads: int | None = 1,
    ) -> None:
        """Options: ``kind`` (naswot or synflow), ``batch_size`` (naswot's batch), ``seed``
        (weights and the batch drawn), ``data`` (naswot's images: "digits" or an .npz path, as
        for the train evaluator), ``split_seed``/``test_fraction`` (digits' split),
        ``threads`` (torch threads while scoring, restored after; None leaves torch's setting).
        """
        n = self.name
        self.kind = choice_option(n, "kind", kind, PROXY_KINDS)
        self.batch_size = int_option(n, "batch_size", batch_size, minimum=2)
        self.seed = int_option(n, "seed", seed, minimum=0)
        self.data = data_option(n, data)
        self.split_seed = int_option(n, "split_seed", split_seed, minimum=0)
        self.test_fraction = fraction_option(n, "test_fraction", test_fraction, zero_allowed=False)
        self.threads = threads_option(n, threads)

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"evaluator": self.name, "kind": self.kind, "seed": self.seed, "threads": self.threads}
        if self.kind == "naswot":
            data = image_data(self.data, split_seed=self.split_seed, test_fraction=self.test_fraction)
            out.update(data.source)
            out["batch_size"] = self.batch_size
        return out

    def _evaluate(self, space: ArchSpace, genome: tuple[int, ...]) -> tuple[float, dict[str, Any]]:
        with torch_threads(self.threads), torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.seed)
            model = space.build(genome, seed=self.seed)
            if self.kind == "naswot":
                value = self._naswot(model, space.input_shape(genome))
            else:
                value = self._synflow(model, space.input_shape(genome))
        if not math.isfinite(value):
            raise RunError(
                f"{self.kind} proxy of {space.name} genome {list(genome)} is not finite (NaN or float64 overflow)"
            )
        return value, {"kind": self.kind}

    def _naswot(self, model: nn.Module, shape: Sequence[int]) -> float:
        data = image_data(self.data, split_seed=self.split_seed, test_fraction=self.test_fraction)
        n = len(data.y_train)
        idx = torch.randperm(n, generator=torch.Generator().manual_seed(self.seed))[: min(self.batch_size, n)]
        x = to_input(data.x_train[idx], shape)
        kernel = torch.zeros(len(idx), len(idx), dtype=torch.float64)

        def accumulate(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            codes = (output.detach().flatten(1) > 0).to(torch.float64)
            kernel.add_(codes @ codes.T).add_((1.0 - codes) @ (1.0 - codes).T)

        hooks = [
            m.register_forward_hook(accumulate) for m in model.modules() if isinstance(m, (nn.ReLU, nn.ReLU6))
        ]
        if not hooks:
            raise InvalidConfigError("the naswot proxy needs ReLU or ReLU6 modules; the network has none")
        model.train()
        try:
            with torch.no_grad():
                model(x)
        finally:
            for h in hooks:
                h.remove()
        sign, logdet = torch.linalg.slogdet(kernel + torch.eye(len(idx), dtype=torch.float64))
        return float(logdet) if float(sign) > 0 else float("nan")

    @staticmethod
    def _synflow(model: nn.Module, shape: Sequence[int]) -> float:
        _replace_modules(model, lambda m: isinstance(m, nn.modules.batchnorm._BatchNorm), lambda m: nn.Identity())
        _replace_modules(model, lambda m: isinstance(m, nn.ReLU6), lambda m: nn.ReLU())
        model = model.double().eval()
        with torch.no_grad():
            for p in model.parameters():
                p.abs_()
        model.zero_grad(set_to_none=True)
        ones = torch.ones(1, *shape[1:], dtype=torch.float64)
        model(ones).sum().backward()
        total = 0.0
        with torch.no_grad():
            for m in model.modules():
                if isinstance(m, (nn.Conv2d, nn.Linear)) and m.weight.grad is not None:
                    total += float((m.weight * m.weight.grad).abs().sum())
        return math.log1p(total) if math.isfinite(total) else float("nan")
