"""``--plot``: POST→terminal latency over completion time, as a PNG, without dependencies.

No plotting library is a dependency, so this draws a scatter into an RGB buffer with a tiny
bitmap font for the axis labels and writes the PNG itself (zlib + struct).
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

from commerce_apps.bench.report import Completion

Color = tuple[int, int, int]
WIDTH, HEIGHT, LEFT, RIGHT, TOP, BOTTOM = 900, 480, 70, 20, 30, 50
WHITE, BLACK, GRID, RED = (255, 255, 255), (30, 30, 30), (225, 225, 225), (200, 30, 30)
STATUS_COLORS: dict[str, Color] = {"CONFIRMED": (30, 110, 200), "CANCELLED": (240, 150, 30)}
# 3x5 glyphs, rows top to bottom, 3 bits each
# fmt: off
FONT = {
    "0": "111101101101111", "1": "010110010010111", "2": "111001111100111",
    "3": "111001111001111", "4": "101101111001001", "5": "111100111001111",
    "6": "111100111101111", "7": "111001010010010", "8": "111101111101111",
    "9": "111101111001111", ".": "000000000000010", " ": "000000000000000",
    "A": "010101111101101", "C": "011100100100011", "D": "110101101101110",
    "E": "111100110100111", "F": "111100110100100", "I": "111010010010111",
    "L": "100100100100111", "M": "101111111101101", "N": "110101101101101",
    "O": "010101101101010", "P": "110101110100100", "R": "110101110101101",
    "S": "011100010001110", "T": "111010010010010", "Y": "101101010010010",
    ">": "100010001010100", "-": "000000111000000",
}
# fmt: on


class Canvas:
    def __init__(self, width: int, height: int) -> None:
        self.width, self.height = width, height
        self.pixels = bytearray(WHITE * (width * height))

    def dot(self, x: int, y: int, color: Color) -> None:
        if 0 <= x < self.width and 0 <= y < self.height:
            i = (y * self.width + x) * 3
            self.pixels[i : i + 3] = bytes(color)

    def rect(self, x: int, y: int, w: int, h: int, color: Color) -> None:
        for yy in range(y, y + h):
            for xx in range(x, x + w):
                self.dot(xx, yy, color)

    def text(self, x: int, y: int, label: str, color: Color = BLACK, scale: int = 2) -> None:
        for n, char in enumerate(label):
            glyph = FONT.get(char, FONT[" "])
            for bit, on in enumerate(glyph):
                if on == "1":
                    col, row = bit % 3, bit // 3
                    self.rect(x + (n * 4 + col) * scale, y + row * scale, scale, scale, color)

    def png(self) -> bytes:
        rows = b"".join(
            b"\x00" + bytes(self.pixels[y * self.width * 3 : (y + 1) * self.width * 3])
            for y in range(self.height)
        )

        def chunk(kind: bytes, data: bytes) -> bytes:
            body = kind + data
            return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

        header = struct.pack(">IIBBBBB", self.width, self.height, 8, 2, 0, 0, 0)
        return b"".join(
            (
                b"\x89PNG\r\n\x1a\n",
                chunk(b"IHDR", header),
                chunk(b"IDAT", zlib.compress(rows, 9)),
                chunk(b"IEND", b""),
            )
        )


def nice_step(span: float, ticks: int = 6) -> float:
    raw = span / ticks if span > 0 else 1.0
    power = 10.0 ** math.floor(math.log10(raw))
    return float(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _label(value: float) -> str:
    return f"{value:g}" if value < 1e5 else f"{value:.0f}"


def scatter_png(completions: Sequence[Completion], p99_ms: float | None = None) -> bytes:
    """Each order at (terminal time s, POST→terminal ms), coloured by its final status."""
    canvas = Canvas(WIDTH, HEIGHT)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    x_max = max((c.terminal_at for c in completions), default=1.0) or 1.0
    y_max = max((c.latency * 1000 for c in completions), default=1.0) or 1.0
    x_step, y_step = nice_step(x_max), nice_step(y_max)
    x_top, y_top = math.ceil(x_max / x_step) * x_step, math.ceil(y_max / y_step) * y_step

    def px(x: float, y: float) -> tuple[int, int]:
        return LEFT + round(x / x_top * plot_w), TOP + plot_h - round(y / y_top * plot_h)

    for i in range(round(y_top / y_step) + 1):
        _, y = px(0, i * y_step)
        canvas.rect(LEFT, y, plot_w, 1, GRID)
        canvas.text(4, y - 5, _label(i * y_step).rjust(6))
    for i in range(round(x_top / x_step) + 1):
        x, _ = px(i * x_step, 0)
        canvas.rect(x, TOP, 1, plot_h, GRID)
        canvas.text(x - 8, TOP + plot_h + 8, _label(i * x_step))
    canvas.rect(LEFT, TOP, 1, plot_h, BLACK)
    canvas.rect(LEFT, TOP + plot_h, plot_w, 1, BLACK)
    for c in completions:
        x, y = px(c.terminal_at, c.latency * 1000)
        canvas.rect(x - 1, y - 1, 3, 3, STATUS_COLORS.get(c.status, BLACK))
    if p99_ms is not None:
        _, y = px(0, p99_ms)
        for x in range(LEFT, LEFT + plot_w, 8):
            canvas.rect(x, y, 4, 1, RED)
        canvas.text(LEFT + plot_w - 60, y - 14, "P99", RED)
    canvas.text(LEFT, 8, "POST-> TERMINAL MS", BLACK)
    canvas.text(LEFT + 260, 8, "CONFIRMED", STATUS_COLORS["CONFIRMED"])
    canvas.text(LEFT + 380, 8, "CANCELLED", STATUS_COLORS["CANCELLED"])
    canvas.text(WIDTH - RIGHT - 110, HEIGHT - 18, "TIME S", BLACK)
    return canvas.png()


def write_plot(path: Path, completions: Sequence[Completion], p99_ms: float | None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(scatter_png(completions, p99_ms))


def unwritable(path: Path) -> str | None:
    """Why ``write_plot`` would fail at ``path``, or ``None``: asked before a run, which it
    would otherwise fail only at its end. Nothing is created to find out."""
    try:
        if path.is_dir():
            return "is a directory"
        if path.exists():
            return None if os.access(path, os.W_OK) else "cannot be written"
        folder = path.parent
        while not folder.exists() and folder != folder.parent:  # the directories to make
            folder = folder.parent
        if not folder.is_dir():
            return f"{folder} is not a directory"
    except OSError as exc:  # a directory on the way that may not be looked into
        return exc.strerror or str(exc)
    return None if os.access(folder, os.W_OK | os.X_OK) else f"{folder} cannot be written in"
