"""Calibrate and check the MCU target's instruction model against QEMU's instruction counts.

For a few mbv2 networks, both pad modes and the weight/activation storage
variants (int8; int16 activations; 4-bit and 2-bit weights packed and decoded
in the kernels, symmetric), the C bundle is built and run on QEMU's MPS2
machine with ``-icount shift=0`` (one virtual ns per instruction); each kernel
call's SysTick ticks (25 MHz reference) give its instruction count. A
least-squares fit per kernel kind, pad mode and storage of
``instructions = a * MACs + b * outputs`` (and ``c * elements`` for the
elementwise kernels, per activation width) gives the constants of
``hwnas.targets.mcu.target.INSTRUCTIONS_PER_MAC`` (printed as Python, to paste);
the table then compares the model's estimate of whole networks with the
emulated count, for the fitted variants and for two it was not fitted on
(``w4a16``, whose row is derived, and asymmetric 4-bit weights, priced with
the symmetric row).

The fit uses the kernels of all networks but the last ``--holdout``; the
whole-network table prices every network with the new constants and reports
the error on the held-out networks apart.

    python benchmarks/mcu_cycle_model.py [--networks 4] [--holdout 1] [--seed 0]

Needs the toolchain (scripts/setup_mcu.sh). Takes about 10 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

#: storage variant -> quantization knobs; the first four are fitted, the rest only checked
VARIANTS = {
    "w8a8": {},
    "w8a16": {"activation_bits": 16},
    "w4a8": {"weight_bits": 4},
    "w2a8": {"weight_bits": 2},
    "w4a16": {"weight_bits": 4, "activation_bits": 16},
    "w4a8-asym": {"weight_bits": 4, "weight_scheme": "asymmetric"},
}
FITTED = ("w8a8", "w8a16", "w4a8", "w2a8")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=4)
    parser.add_argument("--holdout", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--board", default="stm32f746")
    args = parser.parse_args()

    from hwnas.arch import get_space
    from hwnas.pipeline.evaluate import Candidate, evaluate
    from hwnas.targets import get_target
    from hwnas.targets.mcu import target as mcu
    from hwnas.targets.mcu import toolchain as mcu_toolchain
    from hwnas.targets.mcu.bundle import QEMU_MACHINES, QEMU_SYSCLK_HZ

    target = get_target(f"mcu:{args.board}")
    space = get_space("mbv2", resolutions=(64, 96), widths=(0.35, 0.5))
    rng = np.random.default_rng(args.seed)
    rows: dict[tuple[str, str, str], list[tuple[float, float, float]]] = defaultdict(list)
    networks = []
    genomes = [space.sample(rng) for _ in range(args.networks)]
    for number, genome in enumerate(genomes):
        held_out = number >= args.networks - args.holdout
        for variant, quant in VARIANTS.items():
            for pad in ("inline", "buffer"):
                hw = {"pad": pad, "tile": 8, "tile_rows": 0, **quant}
                ev = evaluate(Candidate.from_space(space, genome, hw), target)
                built = ev.built
                with tempfile.TemporaryDirectory() as tmp:
                    target.write_c(built, Path(tmp))
                    mcu_toolchain.make(Path(tmp), "app.elf")
                    run = mcu_toolchain.run_qemu(Path(tmp), QEMU_MACHINES[target.board.core], target.board.core)
                per_tick = 1e9 / QEMU_SYSCLK_HZ
                networks.append((space.describe(genome), variant, pad, built, run.ticks * per_tick, held_out))
                if variant not in FITTED or held_out:
                    continue
                by_func = {w.func: w for w in built.workloads}
                storage = mcu.kernel_storage(built)
                acts = variant[variant.index("a"):]
                for step, c in enumerate(built.plan.order):
                    w = by_func[built.graph.calls[c].func]
                    instr = run.kernel_ticks[step] * per_tick
                    outs = float(np.prod(w.spatial)) if w.spatial else 0.0
                    if w.macs:
                        kind = "depthwise_conv2d" if mcu._is_depthwise(w) else ("dense" if w.kind == "dense"
                                                                                else "conv2d")
                        rows[(kind, pad, storage[w.func])].append((float(w.macs), outs, instr))
                    else:
                        rows[("elementwise", pad, acts)].append((float(np.prod(w.spatial + w.reduction)), 0.0, instr))
    print(f"{'kind':18s} {'pad':7s} {'storage':8s} {'kernels':>7s} {'instr/MAC':>10s} {'instr/output':>12s}")
    fitted: dict = {}
    elementwise: dict[str, list] = defaultdict(list)
    for (kind, pad, storage), data in sorted(rows.items()):
        a = np.array(data)
        if kind == "elementwise":
            coef = [float(a[:, 2].sum() / max(a[:, 0].sum(), 1.0)), 0.0]
            elementwise[storage].append(a)
        else:
            coef, *_ = np.linalg.lstsq(a[:, :2], a[:, 2], rcond=None)
            fitted[(kind, pad, storage)] = (round(float(coef[0]), 2), round(float(coef[1]), 1))
        print(f"{kind:18s} {pad:7s} {storage:8s} {len(a):7d} {coef[0]:10.2f} {coef[1]:12.1f}")
    per_element = {acts: round(float(sum(x[:, 2].sum() for x in arrs) / sum(x[:, 0].sum() for x in arrs)), 1)
                   for acts, arrs in elementwise.items()}
    print("\nINSTRUCTIONS_PER_MAC = {")
    for key, value in fitted.items():
        print(f"    {key!r}: {value!r},")
    print("}")
    print(f"INSTRUCTIONS_PER_ELEMENT = {per_element!r}\n")
    # the whole-network check with the constants just fitted
    mcu.INSTRUCTIONS_PER_MAC = dict(fitted)
    mcu.INSTRUCTIONS_PER_ELEMENT = {**mcu.INSTRUCTIONS_PER_ELEMENT, **per_element}
    print(f"{'network':44s} {'variant':10s} {'pad':7s} {'set':5s} {'emulated':>10s} {'model':>10s} {'error':>7s}")
    errors: dict[tuple[str, bool], list[float]] = defaultdict(list)
    for desc, variant, pad, built, emulated, held_out in networks:
        est = target.estimated_instructions(built)
        errors[(variant, held_out)].append(abs(est - emulated) / emulated)
        print(f"{desc[:44]:44s} {variant:10s} {pad:7s} {'test' if held_out else 'fit':5s} {emulated:10.3e} "
              f"{est:10.3e} {100 * (est - emulated) / emulated:6.1f}%")
    for (variant, held_out), errs in sorted(errors.items()):
        tag = "held-out networks" if held_out else "fitted networks"
        tag += "" if variant in FITTED else ", variant not fitted"
        print(f"mean absolute error {variant:10s} ({tag}): {100 * float(np.mean(errs)):.1f}%  "
              f"max {100 * float(np.max(errs)):.1f}%")


if __name__ == "__main__":
    main()
