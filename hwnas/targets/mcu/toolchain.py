"""The GNU Arm Embedded toolchain and QEMU: build a C bundle, size it, run it under emulation.

Installed by ``scripts/setup_mcu.sh`` (Debian's ``gcc-arm-none-eabi``,
``libnewlib-arm-none-eabi``, ``qemu-system-arm``). Every function raises a
:class:`~hwnas.errors.CompileError` / :class:`~hwnas.errors.RunError` with one
line when a tool is missing or fails.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
from pathlib import Path

from hwnas.errors import CompileError, RunError

TOOLS = ("arm-none-eabi-gcc", "arm-none-eabi-size", "make")
QEMU = "qemu-system-arm"
SETUP_HINT = "run scripts/setup_mcu.sh (as root) to install gcc-arm-none-eabi, libnewlib-arm-none-eabi, qemu-system-arm"


def missing_tools(*, qemu: bool = False) -> list[str]:
    """The tools this machine lacks (of the compiler, binutils, make and, with ``qemu``, QEMU)."""
    wanted = TOOLS + ((QEMU,) if qemu else ())
    missing = [t for t in wanted if shutil.which(t) is None]
    if shutil.which("arm-none-eabi-gcc") and not _newlib_present():
        missing.append("libnewlib-arm-none-eabi")
    return missing


def _newlib_present() -> bool:
    try:
        out = subprocess.run(["arm-none-eabi-gcc", "-print-file-name=rdimon.specs"], capture_output=True,
                             text=True, timeout=30).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return False
    return out != "rdimon.specs" and Path(out).is_file()


def require_tools(*, qemu: bool = False) -> None:
    missing = missing_tools(qemu=qemu)
    if missing:
        raise CompileError(f"the MCU target needs {', '.join(missing)}: {SETUP_HINT}")


def make(bundle: Path, *targets: str, timeout_s: float = 300.0) -> None:
    """``make`` in ``bundle`` (one line with the compiler's first error on failure)."""
    require_tools()
    try:
        proc = subprocess.run(["make", "-s", "-C", str(bundle), *targets], capture_output=True, text=True,
                              timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise CompileError(f"building the MCU bundle took more than {timeout_s:.0f} s") from None
    if proc.returncode != 0:
        text = (proc.stderr + proc.stdout).splitlines()
        lines = ([ln for ln in text if "overflowed" in ln or "will not fit" in ln]
                 or [ln for ln in text if "error" in ln.lower() and "collect2" not in ln] or text[-1:])
        raise CompileError(f"building the MCU bundle failed: {lines[0].strip() if lines else 'make failed'}")


@dataclasses.dataclass(frozen=True)
class Size:
    text: int
    data: int
    bss: int

    @property
    def flash(self) -> int:
        """Bytes stored in flash: code and constants (text) plus initial values of data."""
        return self.text + self.data


def size(*files: Path) -> Size:
    """``arm-none-eabi-size`` of objects or an ELF, summed (Berkeley format)."""
    require_tools()
    proc = subprocess.run(["arm-none-eabi-size", *[str(f) for f in files]], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise CompileError(f"arm-none-eabi-size failed: {proc.stderr.strip().splitlines()[-1:]}")
    text = data = bss = 0
    for line in proc.stdout.splitlines()[1:]:
        parts = line.split()
        if len(parts) >= 3 and parts[0].isdigit():
            text, data, bss = text + int(parts[0]), data + int(parts[1]), bss + int(parts[2])
    return Size(text, data, bss)


@dataclasses.dataclass(frozen=True)
class QemuRun:
    #: the integer output of the first input (the timed inference)
    output: list[int]
    #: SysTick ticks of the inference (reference clock); instructions with ``-icount shift=0``
    ticks: int
    workspace_peak: int
    #: ticks of each kernel call, in execution order
    kernel_ticks: list[int]
    stdout: str
    #: the integer output of every input of ``input.h``, in order
    outputs: list[list[int]] = dataclasses.field(default_factory=list)


def run_qemu(bundle: Path, machine: str, cpu: str, *, timeout_s: float = 300.0) -> QemuRun:
    """Run ``bundle/app.elf`` on QEMU's ``machine`` with semihosting and ``-icount shift=0``."""
    if shutil.which(QEMU) is None:
        raise RunError(f"{QEMU} not found: {SETUP_HINT}")
    cmd = [QEMU, "-M", machine, "-cpu", cpu, "-nographic", "-monitor", "none", "-serial", "none",
           "-semihosting-config", "enable=on,target=native", "-icount", "shift=0",
           "-kernel", str(Path(bundle) / "app.elf")]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        raise RunError(f"qemu ran more than {timeout_s:.0f} s") from None
    out = proc.stdout
    m = re.search(r"^hwnas-output:([-\d ]*)$", out, re.M)
    if proc.returncode != 0 or m is None:
        tail = (out + proc.stderr).strip().splitlines()[-1:] or ["no output"]
        raise RunError(f"the bundle failed under qemu (exit {proc.returncode}): {tail[0]}")
    ticks = re.search(r"^hwnas-ticks: (\d+)$", out, re.M)
    ws = re.search(r"^hwnas-workspace-peak: (\d+)$", out, re.M)
    kernels = re.search(r"^hwnas-kernel-ticks:([\d ]*)$", out, re.M)
    outputs = [[int(v) for v in line.split()] for line in re.findall(r"^hwnas-output:([-\d ]*)$", out, re.M)]
    return QemuRun(output=outputs[0], ticks=int(ticks.group(1)) if ticks else 0,
                   workspace_peak=int(ws.group(1)) if ws else 0,
                   kernel_ticks=[int(v) for v in kernels.group(1).split()] if kernels else [], stdout=out,
                   outputs=outputs)
