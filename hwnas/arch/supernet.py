"""Weight-sharing supernets (Once-for-All / BigNAS style) for any space that implements three methods.

    net = Supernet(get_space("mbv2", resolutions=[32]))
    logits = net(x, genome)                      # the subnet of ``genome``, computed with the shared weights
    module = net.subnet(genome)                  # an ordinary ``space.build(genome)`` module holding them

A space gets a supernet by implementing (see :class:`~hwnas.arch.base.ArchSpace`):

* ``supernet_keys(genome)``: one key per weight layer (``Conv2d``, ``BatchNorm2d``, ``Linear``) of
  ``space.build(genome)``, in ``modules()`` order. Layers with the same key share one tensor: the
  supernet holds it at its largest shape and a smaller layer takes a slice, the first channels and the
  centre of a kernel (elastic width, expansion and kernel, as OFA and BigNAS do). Layers that must not
  share (two operations of one choice) get different keys: :func:`choice_keys` appends the choice.
* ``supernet_cover()``: genomes whose networks together hold every key at its largest shape.
* ``supernet_sandwich()``: the largest and the smallest network, trained at every step.

The subnet is ``space.build(genome)`` itself with the sliced tensors loaded, so it is the same graph the
ONNX -> TVM path compiles. Training runs the same module structure (built once per genome on the meta
device, no memory) through ``torch.func.functional_call`` with views of the shared tensors, so gradients
reach the supernet and ``net(x, genome)`` equals ``net.subnet(genome)(x)``.
"""

from __future__ import annotations

import collections
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call

from hwnas.arch.base import ArchSpace
from hwnas.errors import InvalidConfigError

__all__ = ["LAYER_TYPES", "Supernet", "choice_keys", "layer_modules", "sliced"]

#: the module types whose tensors a supernet shares
LAYER_TYPES = (nn.Conv2d, nn.BatchNorm2d, nn.Linear)


def layer_modules(net: nn.Module) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of the weight layers of ``net`` in ``modules()`` order."""
    return [(name, m) for name, m in net.named_modules() if isinstance(m, LAYER_TYPES)]


def choice_keys(space: ArchSpace, genome: Sequence[int], slot: Callable[[str], int | None],
                choice_names: Sequence[str]) -> list[str]:
    """Keys for a space of choices: a layer's module name, with ``:choice`` appended when ``slot(name)``
    says which gene chooses it (so each choice of a gene has weights of its own)."""
    genome = space.validate(genome)
    with torch.device("meta"):
        net = space._build(genome)
    keys = []
    for name, _ in layer_modules(net):
        gene = slot(name)
        keys.append(name if gene is None else f"{name}:{choice_names[genome[gene]]}")
    return keys


def sliced(t: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """The part of a shared tensor a layer of ``shape`` uses: the first entries of every dimension, the
    centre of a conv kernel's spatial dimensions (a view, so gradients and in-place updates reach ``t``)."""
    if t.dim() != len(shape) or any(w > f for w, f in zip(shape, t.shape)):
        raise InvalidConfigError(f"a layer of shape {tuple(shape)} does not fit in the shared tensor "
                                 f"{tuple(t.shape)}: the space's supernet_cover misses its largest shape")
    index = []
    for d, (full, want) in enumerate(zip(t.shape, shape)):
        start = (full - want) // 2 if t.dim() == 4 and d >= 2 else 0
        index.append(slice(start, start + want))
    return t[tuple(index)]


class Supernet(nn.Module):
    """The shared weights of every network of a space, trained once (see the module docstring)."""

    #: network skeletons (meta device) kept per genome
    keep_skeletons = 64

    def __init__(self, space: ArchSpace, *, seed: int = 0) -> None:
        super().__init__()
        self.space = space
        self.largest, self.smallest = (space.validate(g) for g in space.supernet_sandwich())
        initial: dict[str, torch.Tensor] = {}
        kinds: dict[str, bool] = {}  # name -> is a parameter
        for genome in space.supernet_cover():
            net = space.build(genome, seed=seed)
            for key, (_, module) in zip(self._keys(genome, net), layer_modules(net)):
                for pname, t in [*((n, (p, True)) for n, p in module.named_parameters(recurse=False)),
                                 *((n, (b, False)) for n, b in module.named_buffers(recurse=False))]:
                    tensor, is_param = t
                    full = f"{key}.{pname}"
                    old = initial.get(full)
                    if old is None or all(a >= b for a, b in zip(tensor.shape, old.shape)) and tensor.shape != old.shape:
                        initial[full] = tensor.detach().clone()
                        kinds[full] = is_param
        #: key.param -> the shared tensor (a Parameter or a buffer of this module)
        self._names: dict[str, str] = {}
        for i, (full, tensor) in enumerate(sorted(initial.items())):
            attr = f"t{i}"
            if kinds[full]:
                self.register_parameter(attr, nn.Parameter(tensor))
            else:
                self.register_buffer(attr, tensor)
            self._names[full] = attr
        self._skeletons: collections.OrderedDict[tuple[int, ...], tuple[nn.Module, dict[str, tuple[str, tuple]]]] = (
            collections.OrderedDict())

    def _keys(self, genome: Sequence[int], net: nn.Module) -> list[str]:
        keys = self.space.supernet_keys(genome)
        if len(keys) != len(layer_modules(net)):
            raise InvalidConfigError(f"space {self.space.name}: supernet_keys gives {len(keys)} keys for the "
                                     f"{len(layer_modules(net))} weight layers of {list(genome)}")
        return keys

    def shared(self) -> dict[str, torch.Tensor]:
        """``key.param`` -> the shared tensor."""
        return {full: getattr(self, attr) for full, attr in self._names.items()}

    def load_shared(self, tensors: dict[str, torch.Tensor]) -> None:
        """Load tensors saved from :meth:`shared`; a missing, extra or misshapen one is an error."""
        mine = self.shared()
        if set(tensors) != set(mine):
            diff = sorted(set(tensors) ^ set(mine))[:3]
            raise InvalidConfigError(f"the saved supernet does not match the {self.space.name} space's "
                                     f"(tensors {', '.join(diff)} differ)")
        with torch.no_grad():
            for full, t in tensors.items():
                if tuple(t.shape) != tuple(mine[full].shape):
                    raise InvalidConfigError(f"the saved supernet tensor {full} has shape {tuple(t.shape)}, the "
                                             f"{self.space.name} space's {tuple(mine[full].shape)}")
                mine[full].copy_(t)

    def _skeleton(self, genome: tuple[int, ...]) -> tuple[nn.Module, dict[str, tuple[str, tuple]]]:
        """The network of ``genome`` on the meta device and, per tensor name, (shared name, shape)."""
        kept = self._skeletons.get(genome)
        if kept is not None:
            self._skeletons.move_to_end(genome)
            return kept
        with torch.device("meta"):
            net = self.space._build(genome)
        plan: dict[str, tuple[str, tuple]] = {}
        for key, (name, module) in zip(self._keys(genome, net), layer_modules(net)):
            for pname, t in [*module.named_parameters(recurse=False), *module.named_buffers(recurse=False)]:
                full = f"{key}.{pname}"
                if full not in self._names:
                    raise InvalidConfigError(f"space {self.space.name}: the supernet holds no tensor {full} "
                                             f"(supernet_cover misses it)")
                plan[f"{name}.{pname}" if name else pname] = (self._names[full], tuple(t.shape))
        self._skeletons[genome] = (net, plan)
        while len(self._skeletons) > self.keep_skeletons:
            self._skeletons.popitem(last=False)
        return net, plan

    def forward(self, x: torch.Tensor, genome: Sequence[int]) -> torch.Tensor:
        """The subnet of ``genome`` on ``x``, computed with (views of) the shared tensors."""
        net, plan = self._skeleton(self.space.validate(genome))
        net.train(self.training)
        tensors = {name: sliced(getattr(self, attr), shape) for name, (attr, shape) in plan.items()}
        return functional_call(net, tensors, (x,), strict=True)

    def subnet(self, genome: Sequence[int]) -> nn.Module:
        """``space.build(genome)`` (eval mode, on the CPU) holding copies of its slices of the shared tensors."""
        genome = self.space.validate(genome)
        net = self.space.build(genome)
        _, plan = self._skeleton(genome)
        state = {name: sliced(getattr(self, attr), shape).detach().cpu().clone() for name, (attr, shape) in plan.items()}
        net.load_state_dict(state, strict=True)
        return net.eval()
