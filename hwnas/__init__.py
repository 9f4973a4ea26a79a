"""hwnas: hardware-aware neural architecture search through Apache TVM."""

import os as _os

# TVM sizes its CPU thread pool once, when its runtime loads, from TVM_NUM_THREADS; unset, it takes half the
# hardware threads (it assumes two per core): one worker on a 2-core machine. hwnas resizes the pool to each
# candidate's thread count (hwnas.ir.runtime.set_num_threads), which cannot grow it past that start-up size:
# on a 2-core VM a 2-thread MobileNetV2 then measured 8.4 ms instead of 3.7 ms (slower than 1 thread, 6.8 ms).
# Every core this process may run on, unless the user chose; set before anything here imports TVM.
_os.environ.setdefault("TVM_NUM_THREADS", str(len(_os.sched_getaffinity(0)) if hasattr(_os, "sched_getaffinity")
                                              else _os.cpu_count() or 1))

__version__ = "0.1.0"
