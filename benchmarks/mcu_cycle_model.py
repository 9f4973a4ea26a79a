"""Calibrate and check the MCU target's instruction model against QEMU's instruction counts.

For a few mbv2 networks and both pad modes, the int8 C bundle is built and
run on QEMU's MPS2 machine with ``-icount shift=0`` (one virtual ns per
instruction); each kernel call's SysTick ticks (25 MHz reference) give its
instruction count. A least-squares fit per kernel kind and pad mode of
``instructions = a * MACs + b * outputs`` (and ``c * elements`` for the
elementwise kernels) gives the constants of
``hwnas.targets.mcu.INSTRUCTIONS_PER_MAC``; the table then compares the
model's estimate of whole networks with the emulated count.

    python benchmarks/mcu_cycle_model.py [--networks 4] [--seed 0]

Needs the toolchain (scripts/setup_mcu.sh). Takes a few minutes.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--board", default="stm32f746")
    args = parser.parse_args()

    from hwnas.arch import get_space
    from hwnas.pipeline.evaluate import Candidate, evaluate
    from hwnas.targets import get_target, mcu_toolchain
    from hwnas.targets.mcu import _is_depthwise
    from hwnas.targets.mcu_bundle import QEMU_MACHINES, QEMU_SYSCLK_HZ

    target = get_target(f"mcu:{args.board}")
    space = get_space("mbv2", resolutions=(64, 96), widths=(0.35, 0.5))
    rng = np.random.default_rng(args.seed)
    rows: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    networks = []
    for n in range(args.networks):
        genome = space.sample(rng)
        for pad in ("inline", "buffer"):
            hw = {"pad": pad, "tile": 8, "tile_rows": 0}
            ev = evaluate(Candidate.from_space(space, genome, hw), target)
            built = ev.built
            with tempfile.TemporaryDirectory() as tmp:
                target.write_c(built, Path(tmp))
                mcu_toolchain.make(Path(tmp), "app.elf")
                run = mcu_toolchain.run_qemu(Path(tmp), QEMU_MACHINES[target.board.core], target.board.core)
            per_tick = 1e9 / QEMU_SYSCLK_HZ
            by_func = {w.func: w for w in built.workloads}
            for step, c in enumerate(built.plan.order):
                w = by_func[built.graph.calls[c].func]
                instr = run.kernel_ticks[step] * per_tick
                outs = float(np.prod(w.spatial)) if w.spatial else 0.0
                if w.macs:
                    kind = "depthwise_conv2d" if _is_depthwise(w) else ("dense" if w.kind == "dense" else "conv2d")
                    rows[(kind, pad)].append((float(w.macs), outs, instr))
                else:
                    rows[("elementwise", pad)].append((float(np.prod(w.spatial + w.reduction)), 0.0, instr))
            networks.append((space.describe(genome), pad, built, run.ticks * per_tick))
    print(f"{'kind':18s} {'pad':7s} {'kernels':>7s} {'instr/MAC':>10s} {'instr/output':>12s}")
    for (kind, pad), data in sorted(rows.items()):
        a = np.array(data)
        if kind == "elementwise":
            coef = [float(a[:, 2].sum() / max(a[:, 0].sum(), 1.0)), 0.0]
        else:
            coef, *_ = np.linalg.lstsq(a[:, :2], a[:, 2], rcond=None)
        print(f"{kind:18s} {pad:7s} {len(a):7d} {coef[0]:10.2f} {coef[1]:12.1f}")
    print()
    print(f"{'network':60s} {'pad':7s} {'emulated':>12s} {'model':>12s} {'error':>7s}")
    errors = []
    for desc, pad, built, emulated in networks:
        est = target.estimated_instructions(built)
        errors.append(abs(est - emulated) / emulated)
        print(f"{desc[:60]:60s} {pad:7s} {emulated:12.3e} {est:12.3e} {100 * (est - emulated) / emulated:6.1f}%")
    print(f"mean absolute error of the model: {100 * float(np.mean(errors)):.1f}%")


if __name__ == "__main__":
    main()
