"""Microcontroller boards as data: core, clock, memories, memory map.

``mcu:<board>`` targets read these records. A user adds a board with
:func:`register_board` (from a plugin module, ``--plugin``, before the target
is created). The numbers are from the vendors' datasheets / reference manuals
named in each record's ``source``.
"""

from __future__ import annotations

import dataclasses
import re

from hwnas.errors import InvalidConfigError

#: cores the C bundle and the cycle model know (gcc's -mcpu names)
CORES = ("cortex-m4", "cortex-m7")


@dataclasses.dataclass(frozen=True)
class Board:
    """One microcontroller: what a deployed network may use of it."""

    name: str
    #: gcc/LLVM -mcpu name
    core: str
    clock_mhz: float
    sram_kb: int
    flash_kb: int
    #: where the linker puts code/weights and the arena (start of the largest contiguous SRAM)
    flash_origin: int
    sram_origin: int
    source: str
    description: str = ""

    def __post_init__(self) -> None:
        if not re.fullmatch(r"[a-z0-9_\-]+", self.name):
            raise InvalidConfigError(f"a board name is lower-case letters, digits, '-' or '_', got {self.name!r}")
        if self.core not in CORES:
            raise InvalidConfigError(f"board {self.name}: core must be one of {', '.join(CORES)}, got {self.core!r}")
        for field in ("clock_mhz", "sram_kb", "flash_kb"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise InvalidConfigError(f"board {self.name}: {field} must be a positive number, got {value!r}")
        for field in ("flash_origin", "sram_origin"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < 2**32:
                raise InvalidConfigError(f"board {self.name}: {field} must be a 32-bit address, got {value!r}")
        if not self.source:
            raise InvalidConfigError(f"board {self.name}: name the datasheet its numbers come from (source)")


BOARDS: dict[str, Board] = {}


def register_board(board: Board, *, replace: bool = False) -> Board:
    """Add ``board`` (refused when the name is taken, unless ``replace``)."""
    if not isinstance(board, Board):
        raise InvalidConfigError(f"register_board takes a Board, got {type(board).__name__}")
    if board.name in BOARDS and not replace and BOARDS[board.name] != board:
        raise InvalidConfigError(f"board {board.name!r} is already registered")
    BOARDS[board.name] = board
    return board


def get_board(name: str | None) -> Board:
    if name is None or name not in BOARDS:
        raise InvalidConfigError(
            f"target 'mcu' needs a board, e.g. mcu:stm32f746; boards: {', '.join(sorted(BOARDS))}"
            + (f" (got {name!r})" if name is not None else "")
        )
    return BOARDS[name]


for _board in (
    Board(
        name="stm32f746",
        core="cortex-m7",
        clock_mhz=216,
        sram_kb=320,
        flash_kb=1024,
        flash_origin=0x08000000,
        # DTCM (64 KB) at 0x20000000, then SRAM1 (240 KB) and SRAM2 (16 KB): one contiguous 320 KB
        sram_origin=0x20000000,
        source="ST DS10916 STM32F745xx/STM32F746xx datasheet (2016) and RM0385 reference manual, memory map",
        description="STM32F746 (Cortex-M7, 216 MHz, 320 KB SRAM, 1 MB flash); MCUNet's board",
    ),
    Board(
        name="stm32h743",
        core="cortex-m7",
        clock_mhz=480,
        sram_kb=512,
        flash_kb=2048,
        flash_origin=0x08000000,
        # AXI SRAM (512 KB) at 0x24000000, the largest contiguous block
        sram_origin=0x24000000,
        source="ST DS12110 STM32H742xI/G STM32H743xI/G datasheet (2019) and RM0433 reference manual, memory map",
        description="STM32H743 (Cortex-M7, 480 MHz, 512 KB AXI SRAM, 2 MB flash)",
    ),
    Board(
        name="nrf52840",
        core="cortex-m4",
        clock_mhz=64,
        sram_kb=256,
        flash_kb=1024,
        flash_origin=0x00000000,
        sram_origin=0x20000000,
        source="Nordic nRF52840 Product Specification v1.1 (2019), memory map",
        description="nRF52840 (Cortex-M4F, 64 MHz, 256 KB RAM, 1 MB flash)",
    ),
):
    register_board(_board)
