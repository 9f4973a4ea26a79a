"""Supernets: a subnet is ``space.build(genome)`` with the shared weights, and the supernet computes it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hwnas.arch import get_space
from hwnas.arch.supernet import Supernet, layer_modules
from hwnas.errors import InvalidConfigError

SPACES = {
    "mbv2": dict(resolutions=[32], widths=[0.25, 0.5]),
    "fbnet": dict(num_classes=10),
    "nb201": dict(channels=4, cells_per_stage=1),
}


def _structure(net):
    return [(name, type(m).__name__, tuple(t.shape)) for name, m in net.named_modules()
            for t in [*m.parameters(recurse=False), *m.buffers(recurse=False)]]


@pytest.mark.parametrize("name", [pytest.param("fbnet", marks=pytest.mark.slow), "mbv2", "nb201"])
def test_subnet_is_the_space_network_with_the_shared_weights(name):
    # fbnet (30 s: nine full networks to build) is opt-in; its keys come from choice_keys, as nb201's do
    space = get_space(name, **SPACES[name])
    net = Supernet(space, seed=3)
    with torch.no_grad():  # batch-norm statistics that are not the identity, so that slicing them matters
        for t in net.buffers():
            if t.is_floating_point():
                t.uniform_(0.5, 1.5)
    net.eval()
    rng = np.random.default_rng(0)
    genomes = [net.largest, net.smallest, space.sample(rng), space.sample(rng)]
    for genome in genomes:
        sub = net.subnet(genome)
        fresh = space.build(genome)
        assert _structure(sub) == _structure(fresh)  # same graph, same tensor shapes
        fresh.load_state_dict(sub.state_dict())
        x = torch.randn(2, *space.input_shape(genome)[1:])
        with torch.no_grad():
            ref = fresh(x)
            assert torch.equal(sub(x), ref)
            assert torch.allclose(net(x, genome), ref, atol=1e-5, rtol=1e-5)
    # two genomes that share a layer hold the same values in it (slices of one tensor), different ones differ
    a, b = net.subnet(net.largest), net.subnet(net.smallest)
    wa = dict(layer_modules(a))[layer_modules(a)[0][0]].weight
    wb = dict(layer_modules(b))[layer_modules(b)[0][0]].weight
    assert torch.equal(wa[: wb.shape[0], : wb.shape[1]], wb) if wa.shape[2:] == wb.shape[2:] else True


def test_mbv2_kernels_are_centre_crops_and_channels_prefixes():
    space = get_space("mbv2", **SPACES["mbv2"])
    net = Supernet(space)
    k3 = net.subnet(net.smallest)  # kernel 3, expansion 3, narrowest width
    k7 = net.subnet(net.largest)
    dw3 = [m for _, m in layer_modules(k3) if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (3, 3)
           and m.groups > 1][1]
    dw7 = [m for _, m in layer_modules(k7) if isinstance(m, torch.nn.Conv2d) and m.kernel_size == (7, 7)][0]
    c = dw3.weight.shape[0]
    assert torch.equal(dw3.weight, dw7.weight[:c, :, 2:5, 2:5])


def test_a_space_without_a_supernet_says_what_to_implement():
    from hwnas.arch.base import ArchSpace

    class Plain(ArchSpace):
        name = "plain"
        cardinalities = (2,)
        num_classes = 10

        def input_shape(self, genome):
            return (1, 3, 8, 8)

        def _build(self, genome):
            return torch.nn.Conv2d(3, 10, 1)

        def describe(self, genome):
            return "plain"

    with pytest.raises(InvalidConfigError, match="space plain has no supernet: it must implement supernet_keys"):
        Supernet(Plain())
