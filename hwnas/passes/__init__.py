"""Backend-neutral TVM passes, one per file; a backend's own passes live in its subpackage of :mod:`hwnas.targets`.

* :mod:`~hwnas.passes.quantize`: integer arithmetic at the chosen bit-widths (:class:`QuantizeModule`);
* :mod:`~hwnas.passes.pack_weights`: low-bit weights packed into bytes;
* :mod:`~hwnas.passes.fold_batch_norm`: batch norm folded into the convolution before it;
* :mod:`~hwnas.passes.pad_channels`: conv outputs padded with zero channels up to a block size;
* :mod:`~hwnas.passes.to_float16`: the network in half precision.
"""
