"""A fake target for testing search plumbing only (never a backend's own tests).

Its cost is a fixed function of the genome and hardware config, so searches
over it are fast and exactly reproducible. Loaded with ``--plugin`` (a file
path), as any plugin would be, so worker processes register it too.
"""

import functools
import os
import time

from hwnas.errors import CompileError
from hwnas.hss import ChoiceParam, Constraint, HardwareSpace, IntParam
from hwnas.targets import Target, register, target_names


class ToyTarget(Target):
    name = "toy"
    description = "search-plumbing test target: cost is a formula"
    metrics = ("latency_ms", "peak_memory_kb")
    cost_methods = ("formula",)
    compiles = False
    variants = ()

    def __init__(self, variant=None):
        # "toy:slow:SECONDS" sleeps that long in every evaluation (for kill / timeout tests);
        # "toy:hang:PATH": the first evaluation anywhere writes its process id to PATH and hangs
        # (a test kills that process), the others do not
        super().__init__(variant)
        self.sleep_s = float(variant.split(":")[1]) if variant and variant.startswith("slow:") else 0.0
        self.hang_marker = variant.partition(":")[2] if variant and variant.startswith("hang:") else None

    @functools.cached_property
    def hardware_space(self):
        return HardwareSpace(
            name="toy",
            params={"speed": IntParam(1, 4), "mode": ChoiceParam(("a", "b", "boom"))},
            constraints=(Constraint("mode b needs speed >= 2", lambda c: c["mode"] != "b" or c["speed"] >= 2),),
        )

    def cost_architecture(self, space, genome, hw, *, method):
        time.sleep(self.sleep_s)
        if self.hang_marker is not None:
            try:  # the lock stays: only the first evaluation ever hangs
                os.close(os.open(self.hang_marker + ".lock", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            except FileExistsError:
                pass
            else:
                with open(self.hang_marker + ".tmp", "w") as f:
                    f.write(str(os.getpid()))
                os.rename(self.hang_marker + ".tmp", self.hang_marker)
                time.sleep(300)
        if hw["mode"] == "boom":
            raise CompileError("toy compiler refuses mode boom")
        work = sum((g + 1) * (i + 1) for i, g in enumerate(genome))
        factor = 0.8 if hw["mode"] == "b" else 1.0
        return {"latency_ms": work * factor / hw["speed"], "peak_memory_kb": 10.0 * hw["speed"] + len(genome)}


if "toy" not in target_names():
    register(ToyTarget)
