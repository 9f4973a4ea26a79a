"""The self-contained C bundle of a quantized network for a Cortex-M microcontroller.

Files (all written by :func:`write_bundle`):

* ``kernels.c``: TVM's C code generation of the scheduled int8 PrimFuncs
  (``{"kind": "c"}``, asserts disabled), unchanged except that its TVM header
  includes are replaced by ``tvm_shim.h``;
* ``tvm_shim.h``: the few types and calls that code expects (the DLPack
  tensor, TVM's FFI argument cell, workspace allocation), written here;
* ``model.c`` / ``model.h``: weights as ``const`` arrays (flash), one static
  arena at the offsets of the memory plan (SRAM), a stack-like workspace
  allocator, and ``hwnas_model_run(input, output)`` that calls the kernels in
  the planned order;
* ``input.h``: int8 inputs (one for a cost run; a few test images in a bundle
  with trained weights); ``main.c``: runs an inference on each, prints the
  int8 outputs over semihosting (and the first one's ticks) and returns 0;
* ``startup.c``: vector table and reset handler (copy ``.data``, zero ``.bss``,
  start semihosting, call ``main``, exit with its status); SysTick counts
  time, which under ``qemu -icount`` is instructions;
* ``qemu.ld``: the memory map of the Arm MPS2 board QEMU emulates (code in
  SSRAM1 at 0x00000000, 4 MB; data in SSRAM2/3 at 0x20000000, 4 MB: Arm
  Application Notes AN386 (Cortex-M4) / AN500 (Cortex-M7) for the MPS2 FPGA
  board, as modelled by QEMU's ``mps2`` machines);
* ``board.ld``: the board's own flash and SRAM (origin and size from its
  datasheet), so that ``make board`` fails to link when the network does not
  fit;
* ``Makefile``: ``make`` (qemu build), ``make run``, ``make board``, ``make size``.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hwnas.targets.mcu.boards import Board
from hwnas.targets.mcu.plan import ALIGN, KernelGraph, MemoryPlan

#: QEMU machine per core (MPS2 FPGA images: AN386 Cortex-M4, AN500 Cortex-M7)
QEMU_MACHINES = {"cortex-m4": "mps2-an386", "cortex-m7": "mps2-an500"}
#: SysTick's reference clock on QEMU's MPS2 machines (SYSCLK, 25 MHz)
QEMU_SYSCLK_HZ = 25_000_000
#: stack reserved by the linker scripts
STACK_BYTES = 16 * 1024

_DTYPES = {"int8": ("int8_t", 0, 8), "uint8": ("uint8_t", 1, 8), "int16": ("int16_t", 0, 16),
           "int32": ("int32_t", 0, 32), "int64": ("int64_t", 0, 64), "float32": ("float", 2, 32),
           "bool": ("bool", 1, 8)}

_SHIM = """\
/* Types and calls that TVM's generated C expects, for a bare-metal build (written by hwnas). */
#ifndef HWNAS_TVM_SHIM_H
#define HWNAS_TVM_SHIM_H
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#define TVM_DLL
typedef struct { int32_t device_type; int32_t device_id; } DLDevice;
typedef struct { uint8_t code; uint8_t bits; uint16_t lanes; } DLDataType;
typedef struct {
  void* data;
  DLDevice device;
  int32_t ndim;
  DLDataType dtype;
  int64_t* shape;
  int64_t* strides;
  uint64_t byte_offset;
} DLTensor;
/* one argument of a packed call: a type index, then the value (a DLTensor* here) */
typedef struct {
  int32_t type_index;
  uint32_t zero_padding;
  union { int64_t v_int64; double v_float64; void* v_ptr; };
} TVMFFIAny;
#define HWNAS_FFI_DLTENSOR_PTR 7
void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code, int dtype_bits);
int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr);
void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n);
#endif
"""

_STARTUP = """\
/* Vector table and reset handler for a Cortex-M (written by hwnas). */
#include <stdint.h>
#include <stdlib.h>
extern uint32_t __stack_top, __data_load, __data_start, __data_end, __bss_start__, __bss_end__;
extern int main(void);
extern void initialise_monitor_handles(void);
volatile uint32_t hwnas_systick_wraps;

void Reset_Handler(void) {
  uint32_t* src = &__data_load;
  for (uint32_t* dst = &__data_start; dst < &__data_end;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
#if defined(__ARM_FP)
  /* enable the FPU (CP10, CP11) before any floating-point instruction */
  *(volatile uint32_t*)0xE000ED88 |= (0xFu << 20);
  __asm volatile("dsb\\n isb");
#endif
  initialise_monitor_handles();
  exit(main());
}

static void Fault_Handler(void) { exit(3); }
void SysTick_Handler(void) { hwnas_systick_wraps++; }

__attribute__((section(".vectors"), used)) static const void* const vectors[16] = {
  &__stack_top, (void*)Reset_Handler, (void*)Fault_Handler, (void*)Fault_Handler,
  (void*)Fault_Handler, (void*)Fault_Handler, (void*)Fault_Handler, 0, 0, 0, 0,
  (void*)Fault_Handler, (void*)Fault_Handler, 0, (void*)Fault_Handler, (void*)SysTick_Handler,
};
"""

_MAIN = """\
/* Run an inference on each input of input.h and print its integer output (written by hwnas). */
#include <stdint.h>
#include <stdio.h>
#include "input.h"
#include "model.h"

#define SYST_CSR (*(volatile uint32_t*)0xE000E010)
#define SYST_RVR (*(volatile uint32_t*)0xE000E014)
#define SYST_CVR (*(volatile uint32_t*)0xE000E018)
extern volatile uint32_t hwnas_systick_wraps;

static hwnas_output_t output[HWNAS_OUTPUT_SIZE];

/* SysTick ticks since start (24-bit down-counter plus counted wraps) */
uint64_t hwnas_clock(void) {
  uint32_t w, v;
  do {
    w = hwnas_systick_wraps;
    v = SYST_CVR;
  } while (w != hwnas_systick_wraps);
  return ((uint64_t)w << 24) + (0xFFFFFFu - v);
}

int main(void) {
  SYST_RVR = 0xFFFFFF;
  SYST_CVR = 0;
  SYST_CSR = 0x7; /* enable, interrupt on wrap, processor clock */
  while (SYST_CVR == 0) {
  }
  for (int n = 0; n < HWNAS_INPUTS; ++n) {
    uint64_t t0 = hwnas_clock();
    int rc = hwnas_model_run(hwnas_inputs[n], output);
    uint64_t t1 = hwnas_clock();
    if (rc != 0) {
      printf("hwnas-error: kernel call %d failed\\n", rc);
      return 1;
    }
    printf("hwnas-output:");
    for (int i = 0; i < HWNAS_OUTPUT_SIZE; ++i) printf(" %d", (int)output[i]);
    if (n == 0) { /* the first inference is the one timed */
      printf("\\nhwnas-ticks: %llu\\nhwnas-kernel-ticks:", (unsigned long long)(t1 - t0));
      for (int i = 0; i < HWNAS_KERNEL_CALLS; ++i) printf(" %llu", (unsigned long long)hwnas_kernel_ticks[i]);
      printf("\\nhwnas-workspace-peak: %lu", (unsigned long)hwnas_workspace_peak());
    }
    printf("\\n");
  }
  SYST_CSR = 0;
  return 0;
}
"""

_LD = """\
/* {what} (written by hwnas) */
MEMORY
{{
  FLASH (rx) : ORIGIN = {flash_origin:#010x}, LENGTH = {flash_len}
  RAM (rwx)  : ORIGIN = {ram_origin:#010x}, LENGTH = {ram_len}
}}
ENTRY(Reset_Handler)
SECTIONS
{{
  .text : {{ KEEP(*(.vectors)) *(.text*) *(.rodata*) . = ALIGN(8); }} > FLASH
  .ARM.exidx : {{ *(.ARM.exidx*) }} > FLASH
  __data_load = LOADADDR(.data);
  .data : {{ . = ALIGN(8); __data_start = .; *(.data*) . = ALIGN(8); __data_end = .; }} > RAM AT > FLASH
  .bss (NOLOAD) : {{ . = ALIGN(8); __bss_start__ = .; *(.bss*) *(COMMON) . = ALIGN(8); __bss_end__ = .; }} > RAM
  .heap (NOLOAD) : {{ . = ALIGN(8); end = .; __end__ = .; . += {heap}; }} > RAM
  .stack (NOLOAD) : {{ . = ALIGN(8); . += {stack}; __stack_top = .; }} > RAM
}}
"""

_MAKEFILE = """\
# Build the bundle with the GNU Arm Embedded toolchain (written by hwnas).
#   make          app.elf for QEMU's {machine} (semihosting output)
#   make run      run it: prints the int8 output
#   make board    board.elf linked with the {board} memory map (fails when it does not fit)
#   make size     text/data/bss of both
CC = arm-none-eabi-gcc
SIZE = arm-none-eabi-size
QEMU = qemu-system-arm
CPU = {core}
CFLAGS = -mcpu=$(CPU) -mthumb -mfloat-abi=soft -O2 -std=gnu11 -ffunction-sections -fdata-sections \\
         -fno-strict-aliasing -Wall -Wno-unused-variable -Wno-unused-but-set-variable
LDFLAGS = -mcpu=$(CPU) -mthumb -mfloat-abi=soft -nostartfiles --specs=rdimon.specs -Wl,--gc-sections
SRC = startup.c main.c model.c kernels.c
OBJ = $(SRC:.c=.o)

all: app.elf
%.o: %.c model.h tvm_shim.h input.h
\t$(CC) $(CFLAGS) -c $< -o $@
app.elf: $(OBJ) qemu.ld
\t$(CC) $(LDFLAGS) -T qemu.ld $(OBJ) -lm -o $@
board.elf: $(OBJ) board.ld
\t$(CC) $(LDFLAGS) -T board.ld $(OBJ) -lm -o $@
board: board.elf
run: app.elf
\t$(QEMU) -M {machine} -cpu {core} -nographic -monitor none -serial none \\
\t  -semihosting-config enable=on,target=native -icount shift=0 -kernel app.elf
size: app.elf board.elf
\t$(SIZE) app.elf board.elf
clean:
\trm -f $(OBJ) app.elf board.elf
.PHONY: all board run size clean
"""


def _c_array(values: np.ndarray, ctype: str, per_line: int = 24) -> str:
    flat = np.asarray(values).ravel()
    if ctype == "float":
        items = [f"{float(v)!r}f" for v in flat]
    else:
        items = [str(int(v)) for v in flat]
    lines = [", ".join(items[i: i + per_line]) for i in range(0, len(items), per_line)]
    return "{\n  " + ",\n  ".join(lines) + "\n}" if lines else "{0}"


def kernels_source(tvm_c_source: str) -> str:
    """TVM's C source with its TVM header includes replaced by the shim."""
    out = []
    shim_done = False
    for line in tvm_c_source.splitlines():
        if line.startswith('#include "tvm/'):
            if not shim_done:
                out.append('#include "tvm_shim.h"')
                shim_done = True
            continue
        if line.strip() == "#define TVM_EXPORTS":
            continue
        out.append(line)
    return "/* TVM's C code generation of the scheduled int8 kernels (hwnas replaced the TVM includes). */\n" + \
        "\n".join(out) + "\n"


def model_source(graph: KernelGraph, plan: MemoryPlan, workspace_bytes: int) -> tuple[str, str]:
    """``model.h`` and ``model.c`` for ``graph`` laid out by ``plan``."""
    out_t = graph.tensors[graph.output]
    in_t = graph.tensors[graph.input]
    header = textwrap.dedent(f"""\
        /* The network: hwnas_model_run(input, output) (written by hwnas). */
        #ifndef HWNAS_MODEL_H
        #define HWNAS_MODEL_H
        #include <stddef.h>
        #include <stdint.h>
        #define HWNAS_INPUT_SIZE {int(np.prod(in_t.shape))}
        #define HWNAS_OUTPUT_SIZE {int(np.prod(out_t.shape))}
        #define HWNAS_ARENA_BYTES {plan.arena_bytes}
        #define HWNAS_WORKSPACE_BYTES {workspace_bytes}
        #define HWNAS_KERNEL_CALLS {len(plan.order)}
        typedef {_DTYPES[in_t.dtype][0]} hwnas_input_t;
        typedef {_DTYPES[out_t.dtype][0]} hwnas_output_t;
        /* 0 on success; input and output are integers, quantized with the scales in manifest.json */
        int hwnas_model_run(const hwnas_input_t* input, hwnas_output_t* output);
        size_t hwnas_workspace_peak(void);
        /* a clock the application may provide (the default returns 0); the time of each kernel
           call of the last run, in execution order */
        uint64_t hwnas_clock(void);
        extern uint64_t hwnas_kernel_ticks[HWNAS_KERNEL_CALLS];
        #endif
        """)
    lines = [
        "/* Weights (flash), the activation arena (SRAM) and the kernel calls in the planned order.",
        "   Written by hwnas. */",
        "#include <string.h>",
        '#include "model.h"',
        '#include "tvm_shim.h"',
        "",
        f"static uint8_t hwnas_arena[{max(plan.arena_bytes, ALIGN)}] __attribute__((aligned({ALIGN})));",
        f"static uint8_t hwnas_workspace[{max(workspace_bytes, ALIGN)}] __attribute__((aligned({ALIGN})));",
        "static size_t ws_top, ws_peak;",
        "",
        "/* kernels allocate and free their scratch buffers in stack order */",
        "void* TVMBackendAllocWorkspace(int device_type, int device_id, uint64_t nbytes, int dtype_code, "
        "int dtype_bits) {",
        f"  size_t size = ((size_t)nbytes + {ALIGN - 1}u) & ~(size_t){ALIGN - 1}u;",
        "  if (ws_top + size > sizeof(hwnas_workspace)) return NULL;",
        "  void* p = hwnas_workspace + ws_top;",
        "  ws_top += size;",
        "  if (ws_top > ws_peak) ws_peak = ws_top;",
        "  return p;",
        "}",
        "int TVMBackendFreeWorkspace(int device_type, int device_id, void* ptr) {",
        "  ws_top = (size_t)((uint8_t*)ptr - hwnas_workspace);",
        "  return 0;",
        "}",
        "void TVMFFIErrorSetRaisedFromCStrParts(const char* kind, const char** parts, int32_t n) {}",
        "size_t hwnas_workspace_peak(void) { return ws_peak; }",
        "__attribute__((weak)) uint64_t hwnas_clock(void) { return 0; }",
        "uint64_t hwnas_kernel_ticks[HWNAS_KERNEL_CALLS];",
        "",
    ]
    for name, t in graph.tensors.items():
        if t.role == "weight":
            ctype = _DTYPES[t.dtype][0]
            lines.append(f"static const {ctype} {name}_data[{max(1, t.value.size)}] __attribute__((aligned({ALIGN}))) = "
                         f"{_c_array(t.value, ctype)};")
    lines.append("")
    for name, t in graph.tensors.items():
        ctype, code, bits = _DTYPES[t.dtype]
        shape = ", ".join(str(d) for d in t.shape) or "1"
        lines.append(f"static const int64_t {name}_shape[{max(1, len(t.shape))}] = {{{shape}}};")
        data = f"(void*){name}_data" if t.role == "weight" else f"(void*)(hwnas_arena + {plan.offsets[name]})"
        lines.append(f"static const DLTensor {name} = {{{data}, {{1, 0}}, {len(t.shape)}, {{{code}, {bits}, 1}}, "
                     f"(int64_t*){name}_shape, NULL, 0}};")
    lines.append("")
    funcs = sorted({c.func for c in graph.calls})
    for f in funcs:
        lines.append(f"int32_t __tvm_ffi_{f}(void* self, void* args, int32_t num_args, void* result);")
    lines += ["", "static int call(int32_t (*f)(void*, void*, int32_t, void*), DLTensor** ts, int n) {",
              "  TVMFFIAny args[8];",
              "  for (int i = 0; i < n; ++i) {",
              "    args[i].type_index = HWNAS_FFI_DLTENSOR_PTR;",
              "    args[i].zero_padding = 0;",
              "    args[i].v_ptr = ts[i];",
              "  }",
              "  TVMFFIAny result;",
              "  return f(NULL, args, n, &result);",
              "}", "",
              "int hwnas_model_run(const hwnas_input_t* input, hwnas_output_t* output) {",
              f"  memcpy({_data(graph.input, plan)}, input, {in_t.nbytes});"]
    max_args = max((len(c.args) + 1 for c in graph.calls), default=1)
    if max_args > 8:
        lines = [ln.replace("TVMFFIAny args[8];", f"TVMFFIAny args[{max_args}];") for ln in lines]
    for step, c in enumerate(plan.order):
        call = graph.calls[c]
        ts = ", ".join(f"(DLTensor*)&{a}" for a in [*call.args, call.out])
        lines.append(f"  {{ DLTensor* ts[] = {{{ts}}}; uint64_t t = hwnas_clock();")
        lines.append(f"    if (call(__tvm_ffi_{call.func}, ts, {len(call.args) + 1})) return {step + 1};")
        lines.append(f"    hwnas_kernel_ticks[{step}] = hwnas_clock() - t; }}")
    lines.append(f"  memcpy(output, {_data(graph.output, plan)}, {out_t.nbytes});")
    lines += ["  return 0;", "}", ""]
    return header, "\n".join(lines)


def _data(name: str, plan: MemoryPlan) -> str:
    return f"(hwnas_arena + {plan.offsets[name]})"


def input_header(inputs: Sequence[np.ndarray]) -> str:
    """``input.h``: the integer ``inputs`` (each at the network's input shape) as
    ``hwnas_inputs[HWNAS_INPUTS][size]``; ``main.c`` runs and prints each in turn."""
    rows = [np.asarray(x).ravel() for x in inputs]
    ctype = _DTYPES[str(rows[0].dtype)][0]
    body = ",\n".join(_c_array(row, ctype) for row in rows)
    return (f"/* {len(rows)} {rows[0].dtype} input(s) (written by hwnas). */\n#include <stdint.h>\n"
            f"#define HWNAS_INPUTS {len(rows)}\n"
            f"static const {ctype} hwnas_inputs[HWNAS_INPUTS][{rows[0].size}] = {{\n{body}\n}};\n")


def linker_script(what: str, flash_origin: int, flash_len: int, ram_origin: int, ram_len: int,
                  heap: int = 4096) -> str:
    return _LD.format(what=what, flash_origin=flash_origin, flash_len=flash_len, ram_origin=ram_origin,
                      ram_len=ram_len, heap=heap, stack=STACK_BYTES)


def write_bundle(out_dir: Path, *, board: Board, tvm_c_source: str, graph: KernelGraph, plan: MemoryPlan,
                 workspace_bytes: int, inputs: Sequence[np.ndarray]) -> dict[str, Path]:
    """Write the bundle's files into ``out_dir`` (``inputs``: the integer inputs ``input.h`` holds); return
    role -> path."""
    out_dir = Path(out_dir)
    header, model_c = model_source(graph, plan, workspace_bytes)
    machine = QEMU_MACHINES[board.core]
    files = {
        "kernels.c": kernels_source(tvm_c_source),
        "tvm_shim.h": _SHIM,
        "model.h": header,
        "model.c": model_c,
        "input.h": input_header(inputs),
        "main.c": _MAIN,
        "startup.c": _STARTUP,
        "qemu.ld": linker_script(f"QEMU {machine}: Arm MPS2 SSRAM1 (code) and SSRAM2/3 (data)",
                                 0x00000000, 4 * 1024 * 1024, 0x20000000, 4 * 1024 * 1024),
        "board.ld": linker_script(f"{board.name}: {board.source}", board.flash_origin, board.flash_kb * 1024,
                                  board.sram_origin, board.sram_kb * 1024, heap=1024),
        "Makefile": _MAKEFILE.format(machine=machine, core=board.core, board=board.name),
    }
    paths = {}
    for name, text in files.items():
        path = out_dir / name
        path.write_text(text)
        paths[name] = path
    return paths
