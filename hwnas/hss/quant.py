"""Quantization knobs of a hardware space: per-layer weight bit-width and activation bit-width, as data.

A network's layer count depends on its architecture, but a search needs a
fixed-length genome, so the per-layer bit-widths are encoded as **bit-width
groups**: a global default (``weight_bits``) and overrides for the first
conv layer (``weight_bits_first``), the last layer (``weight_bits_last``, the
classifier) and the depthwise convs (``weight_bits_dw``); ``default`` means
"take the global value", and where groups overlap the first match in that
order (first, last, depthwise) wins. Every network maps onto the same six
genes; the per-layer result is recorded by the quantization pass
(``layer_bits`` of :func:`hwnas.passes.quantize.quantization_info`).

``activation_bits``: 8 or 16 (integer tensors and arithmetic) or ``float``
(weight-only rounding, a study of accuracy: no saving, see
:mod:`hwnas.passes.quantize`); ``weight_scheme``: ``symmetric`` or
``asymmetric`` (per-channel zero point on the sub-8-bit layers).
"""

from __future__ import annotations

from collections.abc import Sequence

from hwnas.hss.params import ChoiceParam, Param

#: the knob names, in genome order
KNOBS = ("weight_bits", "weight_bits_first", "weight_bits_last", "weight_bits_dw", "activation_bits", "weight_scheme")
#: the override knob of each layer group
GROUP_KNOBS = {"first": "weight_bits_first", "last": "weight_bits_last", "depthwise": "weight_bits_dw"}
FLOAT = "float"
DEFAULT = "default"


def quantization_params(*, weight_bits: Sequence = (8, 6, 4, 2), activation_bits: Sequence = (8, 16),
                        default_weight=None, default_activation=None) -> dict[str, Param]:
    """The six knobs for a target whose weights may take ``weight_bits`` (``"float"`` among them: the layer
    is not quantized) and whose activations ``activation_bits``; the defaults are the first values
    unless given."""
    weight_bits = tuple(weight_bits)
    floats = "; float: not quantized" if FLOAT in weight_bits else ""
    act_floats = "; float: weights rounded only" if FLOAT in tuple(activation_bits) else ""
    return {
        "weight_bits": ChoiceParam(weight_bits, default_value=default_weight,
                                   doc=f"weight bits of every conv/dense layer (per-channel{floats})"),
        "weight_bits_first": ChoiceParam((DEFAULT, *weight_bits),
                                         doc="weight bits of the first layer (default: weight_bits)"),
        "weight_bits_last": ChoiceParam((DEFAULT, *weight_bits),
                                        doc="weight bits of the last layer, the classifier (default: weight_bits)"),
        "weight_bits_dw": ChoiceParam((DEFAULT, *weight_bits),
                                      doc="weight bits of depthwise convs (default: weight_bits)"),
        "activation_bits": ChoiceParam(tuple(activation_bits), default_value=default_activation,
                                       doc=f"activation bits (int8/int16 tensors{act_floats})"),
        "weight_scheme": ChoiceParam(("symmetric", "asymmetric"),
                                     doc="per-channel weight grid (asymmetric: a zero point, sub-8-bit layers)"),
    }
