"""On a CUDA machine: the GPU target's analytical estimate against measured latency, plus numerics.

Samples ``--n`` candidates (an NB201 cell and a random valid hardware config
of the GPU target each, seeded), builds them in parallel worker processes
(TVM CUDA codegen; configs over the device's limits are redrawn), then, one
at a time in this process, runs each on ``tvm.cuda(0)``: the median of
``--repeats`` timings after warm-up. Prints per candidate the estimate and
the measurement, then Kendall tau and Spearman rho between them and the
median ratio measured / estimated. The first ``--check`` candidates (and
every fp16 one among them) are also compared with ONNX Runtime on the same
input (fp32 within 1e-3, fp16 within 3e-2).

    python benchmarks/gpu_estimate_vs_measure.py --n 30 [--device h100] [--workers 8] [--budget-s 270]

The device defaults to the one ``tvm.cuda(0)`` reports (H100 / H200 / A100 /
RTX 4090 / Orin by name). The CUDA kernels are compiled when a module is
loaded on the GPU: through NVRTC if the ``cuda-bindings`` package is
installed, else through nvcc (this script sets ``TVM_CUDA_COMPILE_MODE=nvcc``
for itself when nvcc is on PATH). Exit status 0 when every candidate ran and
every checked one matched ONNX Runtime, 1 otherwise, 2 when there is no CUDA device.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

MAX_REDRAWS = 20
#: the workers only compile; spawned, not forked, so that none inherits this process's CUDA context
SPAWN = multiprocessing.get_context("spawn")


def build_one(job: tuple[int, str, int, str]) -> dict:
    """Build candidate ``i`` (seeded) for ``gpu:<device>``; export its library into ``folder``."""
    i, device, seed, folder = job
    import numpy as np

    from hwnas.arch import get_space
    from hwnas.errors import HwnasError
    from hwnas.pipeline.evaluate import Candidate, compile_candidate
    from hwnas.targets import get_target

    space = get_space("nb201")
    target = get_target(f"gpu:{device}")
    rng = np.random.default_rng([seed, i])
    genome = space.sample(rng)
    work = Path(folder) / f"c{i}"
    last = ""
    for _ in range(MAX_REDRAWS):
        hw = target.hardware_space.sample(rng)
        try:
            t0 = time.perf_counter()
            _, built, onnx_path = compile_candidate(Candidate.from_space(space, genome, hw), target, hw,
                                                    workdir=work, timings={})
            build_s = time.perf_counter() - t0
        except HwnasError as exc:  # over the device's limits: draw another config
            last = str(exc)
            continue
        est_ms, _ = target.estimate(built)
        lib = work / "model.so"
        built.executable.export_library(str(lib))
        return {"i": i, "genome": list(genome), "hw": hw, "est_ms": est_ms, "lib": str(lib), "onnx": str(onnx_path),
                "inputs": built.inputs, "kernels": len(built.launches), "build_s": build_s}
    return {"i": i, "error": f"no buildable config in {MAX_REDRAWS} draws: {last}"}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=30)
    parser.add_argument("--device", help="device table entry (default: from tvm.cuda(0).device_name)")
    parser.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1))
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--check", type=int, default=6, help="candidates checked against ONNX Runtime")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--budget-s", type=float, default=270.0, help="stop measuring after this many seconds")
    parser.add_argument("--build-only", action="store_true",
                        help="no GPU: build the candidates for --device and print the estimates (a dry run)")
    args = parser.parse_args()
    t_start = time.time()

    from hwnas.targets.gpu.target import cuda_compile_mode

    mode = cuda_compile_mode()
    import numpy as np
    import tvm
    from tvm import relax

    from hwnas.ir import runtime as measure

    dev = tvm.cuda(0)
    if args.build_only:
        if not args.device:
            print("gpu_estimate_vs_measure: --build-only needs --device", file=sys.stderr)
            return 2
        with tempfile.TemporaryDirectory(prefix="hwnas-gpu-") as tmp:
            t0 = time.time()
            with ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=SPAWN) as pool:
                built = list(pool.map(build_one, [(i, args.device, args.seed, tmp) for i in range(args.n)]))
        for b in built:
            print(f"{b['i']:3d} " + (f"kernels {b['kernels']:3d} estimate {b['est_ms']:.4f} ms build {b['build_s']:.1f} s"
                                     if "lib" in b else f"skipped: {b['error']}"))
        print(f"built {sum('lib' in b for b in built)}/{args.n} in {time.time() - t0:.0f} s")
        return 0
    if not dev.exist:
        print("gpu_estimate_vs_measure: no CUDA device (tvm.cuda(0).exist is False)", file=sys.stderr)
        return 2
    if not mode:
        print("gpu_estimate_vs_measure: the TVM runtime compiles CUDA at load time and needs cuda-bindings "
              "(NVRTC) or nvcc on PATH; neither is here", file=sys.stderr)
        return 2
    name = str(dev.device_name)
    from hwnas.targets.gpu.devices import DEVICES, device_named

    device = args.device or device_named(name)
    if device is None:
        print(f"gpu_estimate_vs_measure: {name!r} is not in the device table; pass --device", file=sys.stderr)
        return 2
    print(f"device: {name} (compute {dev.compute_version}), estimated as gpu:{device}; CUDA compiled by {mode}")
    table = DEVICES[device]
    print(f"  reported: {dev.multi_processor_count} SMs, {dev.max_clock_rate / 1000:.0f} MHz, "
          f"{dev.max_shared_memory_per_block} B shared/block, {dev.max_threads_per_block} threads/block; "
          f"table: {table.sms} SMs, {table.boost_clock_mhz:.0f} MHz, {table.smem_per_block_kb * 1024} B, "
          f"{table.max_threads_per_block}")

    with tempfile.TemporaryDirectory(prefix="hwnas-gpu-") as tmp:
        jobs = [(i, device, args.seed, tmp) for i in range(args.n)]
        t0 = time.time()
        with ProcessPoolExecutor(max_workers=max(1, args.workers), mp_context=SPAWN) as pool:
            built = list(pool.map(build_one, jobs))
        print(f"built {sum('lib' in b for b in built)}/{args.n} candidates in {time.time() - t0:.0f} s "
              f"({args.workers} workers)")
        rows = []
        failures = 0
        run_failures = 0
        header = (f"{'#':>3} {'kernels':>7} {'estimate ms':>12} {'measured ms':>12} {'meas/est':>9}  "
                  f"{'numerics':>16}  hw")
        print(header)
        for b in built:
            if "error" in b:
                print(f"{b['i']:3d} skipped: {b['error']}")
                continue
            if time.time() - t_start > args.budget_s:
                print(f"time budget of {args.budget_s:.0f} s reached; stopping at {len(rows)} measured")
                break
            arrays = list(measure.random_inputs(b["inputs"], seed=b["i"]).values())
            try:
                lib = tvm.runtime.load_module(b["lib"])
                timing = measure.measure_vm(lib, arrays, device=dev, warmup=10, repeats=args.repeats,
                                            min_repeat_ms=10)
            except Exception as exc:  # a kernel that faults: report it and go on
                run_failures += 1
                print(f"{b['i']:3d} FAILED to load or run: {str(exc).strip().splitlines()[-1][:200]}", flush=True)
                continue
            note = ""
            if len(rows) < args.check:
                import onnxruntime as ort

                vm = relax.VirtualMachine(lib, dev)
                out = vm["main"](*[tvm.runtime.tensor(a, dev) for a in arrays])
                out = (out[0] if isinstance(out, (list, tuple)) or type(out).__name__ == "Array" else out).numpy()
                sess = ort.InferenceSession(b["onnx"], providers=["CPUExecutionProvider"])
                ref = sess.run(None, dict(zip([x.name for x in sess.get_inputs()], arrays)))[0]
                tol = 3e-2 if b["hw"]["precision"] == "fp16" else 1e-3
                err = float(np.abs(out - ref).max())
                ok = bool(np.allclose(out, ref, rtol=tol, atol=tol))
                failures += not ok
                note = f"{'ok' if ok else 'MISMATCH'} {err:.1e}"
            rows.append((b["est_ms"], timing.median_ms))
            hw = " ".join(f"{k}={v}" for k, v in b["hw"].items())
            print(f"{b['i']:3d} {b['kernels']:7d} {b['est_ms']:12.4f} {timing.median_ms:12.4f} "
                  f"{timing.median_ms / b['est_ms']:9.2f}  {note:>16}  {hw}", flush=True)
    if len(rows) >= 3:
        from scipy.stats import kendalltau, spearmanr

        est, meas = [r[0] for r in rows], [r[1] for r in rows]
        print(f"\n{len(rows)} candidates: Kendall tau {kendalltau(est, meas).statistic:.3f}, "
              f"Spearman rho {spearmanr(est, meas).statistic:.3f}, "
              f"median measured/estimated {statistics.median(m / e for e, m in rows):.2f}, "
              f"measured median {statistics.median(meas):.3f} ms")
    print(f"numerics: {min(args.check, len(rows)) - failures}/{min(args.check, len(rows))} candidates match "
          f"ONNX Runtime; {run_failures} failed to run; total {time.time() - t_start:.0f} s")
    return 1 if failures or run_failures else 0


if __name__ == "__main__":
    sys.exit(main())
