"""Accuracy, size and latency of fp32, int8 and mixed precision, on the CPU and a microcontroller, in one table.

For a few mbv2 networks (32x32, scikit-learn's digits): each network is
trained once by the ``train`` accuracy evaluator; every precision is then
deployed as the targets compile it (post-training quantization calibrated on
64 training images, accuracy on the held-out test split, never on the
calibration images) and compiled for

* ``cpu`` (this machine: the int8 kernels scheduled with the default knobs,
  latency measured: median of repeats, 2 threads) and
* ``mcu:stm32f746`` (the int C bundle: SRAM from the memory plan, flash from
  ``arm-none-eabi-size``, latency the cycle-model estimate; ``--emulate``
  runs the bundle under QEMU and reports the emulated instruction count's
  latency instead). The MCU has no fp32 build.

Precisions: ``fp32``; ``int8`` (8-bit weights and activations); ``mixed``
(HAQ-style: 8-bit first and last layer and depthwise convs, 4-bit weights
elsewhere, int8 activations); ``w4`` (4-bit weights everywhere but the first
and last layer); ``a16`` (8-bit weights, int16 activations).

``cpu params`` is the weight bytes as the CPU compiles them (quantized
weights one per byte), ``packed`` what they would take packed at their
bit-widths (a model); ``mcu params`` the weight bytes of the MCU bundle, where
4- and 2-bit weights are packed (two and four per byte) and decoded in the
kernels, so its flash shrinks with them (6-bit weights stay one per byte).

    python benchmarks/quantization.py [--networks 3] [--epochs 3] [--emulate]

Takes a few minutes (training, about 15 compiles per network, and the CPU
measurements). Timings from a shared machine are noisy.
"""

from __future__ import annotations

import argparse

import numpy as np

PRECISIONS = {
    "fp32": {},
    "int8": {"activation_bits": 8, "weight_bits": 8},
    "mixed": {"activation_bits": 8, "weight_bits": 4, "weight_bits_first": 8, "weight_bits_last": 8,
              "weight_bits_dw": 8},
    "w4": {"activation_bits": 8, "weight_bits": 4, "weight_bits_first": 8, "weight_bits_last": 8},
    "a16": {"activation_bits": 16, "weight_bits": 8},
}
#: the networks: all blocks k3 e3 d1 (small), a seeded sample, and k5 e6 d2 everywhere, at width 0.5
NETWORKS = (("small", [0] * 18), ("sampled", None), ("k5e6d2", [1, 2, 1] * 6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--networks", type=int, default=3, help="how many of the networks (1-3)")
    parser.add_argument("--epochs", type=int, default=3, help="training epochs of the train evaluator")
    parser.add_argument("--board", default="stm32f746")
    parser.add_argument("--emulate", action="store_true", help="MCU latency from QEMU instead of the cycle model")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from hwnas.arch import get_space
    from hwnas.passes.quantize import QuantSpec
    from hwnas.accuracy import get_accuracy
    from hwnas.pipeline.evaluate import Candidate, evaluate
    from hwnas.targets import get_target
    from hwnas.targets.mcu import toolchain as mcu_toolchain

    space = get_space("mbv2", resolutions=(32,), widths=(0.5,))
    cpu = get_target("cpu")
    cpu.set_measure_options(repeats=30)
    mcu = None if mcu_toolchain.missing_tools(qemu=args.emulate) else get_target(f"mcu:{args.board}")
    evaluator = get_accuracy("train", epochs=args.epochs, time_budget_s=None)
    rng = np.random.default_rng(args.seed)
    rows = []
    for name, genes in NETWORKS[: args.networks]:
        genome = space.sample(rng) if genes is None else genes + [0, 0]
        for precision, knobs in PRECISIONS.items():
            hw_cpu = cpu.hardware_space.validate(knobs)
            if QuantSpec.from_config(hw_cpu) is None:
                acc = evaluator.evaluate(space, genome)
            else:
                acc = evaluator.evaluate(space, genome, deploy=lambda m, s, c, hw=hw_cpu: cpu.deploy_network(m, s, c, hw))
            c = evaluate(Candidate.from_space(space, genome, hw_cpu), cpu).metrics
            row = {"network": name, "precision": precision, "accuracy": acc, "params": c["params_kb"],
                   "packed": c["params_packed_kb"], "cpu_ms": c["latency_ms"], "cpu_peak": c["peak_memory_kb"],
                   "macs": c["macs"]}
            if mcu is not None and precision != "fp32":
                m = evaluate(Candidate.from_space(space, genome, mcu.hardware_space.validate(knobs)), mcu,
                             cost="emulate" if args.emulate else "model").metrics
                row.update(mcu_params=m["params_kb"], mcu_flash=m["flash_kb"], mcu_sram=m["peak_memory_kb"],
                           mcu_ms=m["latency_ms"])
            rows.append(row)
            print(f"  {name} {precision}: {row}", flush=True)
        print(f"{name}: {space.describe(genome)}")

    mcu_note = "emulated" if args.emulate else "estimate"
    print(f"\n| network | precision | accuracy % | cpu params KiB | packed KiB (model) | cpu ms | cpu peak KiB | "
          f"{args.board} params KiB | flash KiB | SRAM KiB | ms ({mcu_note}) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        mcu_cells = (f"{r['mcu_params']:.1f} | {r['mcu_flash']:.1f} | {r['mcu_sram']:.1f} | {r['mcu_ms']:.1f}"
                     if "mcu_flash" in r else "- | - | - | -")
        print(f"| {r['network']} | {r['precision']} | {r['accuracy']:.2f} | {r['params']:.1f} | {r['packed']:.1f} | "
              f"{r['cpu_ms']:.3f} | {r['cpu_peak']:.1f} | {mcu_cells} |")


if __name__ == "__main__":
    main()
