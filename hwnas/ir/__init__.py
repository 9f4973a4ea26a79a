"""The neutral compiler layer: everything between a torch module and a compiled, timed TVM module.

It knows no target, no search and no accuracy; every layer above uses it.

* :mod:`~hwnas.ir.lower`: ONNX export and import (with the operator check), fuse, the build pipeline,
  :func:`~hwnas.ir.lower.compile_module` and :func:`~hwnas.ir.lower.build_module`;
* :mod:`~hwnas.ir.graph`: figures read from the ONNX graph (MACs);
* :mod:`~hwnas.ir.analysis`: parameter bytes, the static memory plan, the I/O signature;
* :mod:`~hwnas.ir.workloads`: TIR walking and the kernel records (workloads) every cost method keys on;
* :mod:`~hwnas.ir.schedule`: helpers and the one driver every schedule pass shares;
* :mod:`~hwnas.ir.relax_util`: Relax rewriting helpers;
* :mod:`~hwnas.ir.runtime`: the thread pool, running and timing a module or a kernel, host CPU facts;
* :mod:`~hwnas.ir.built`: :class:`~hwnas.ir.built.Built`, a module compiled for one hardware config.
"""
