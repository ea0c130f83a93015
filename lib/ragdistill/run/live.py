"""The terminal's view of a running stage: what it does, its bar with the time left, drawn from the bars' reports."""

from __future__ import annotations

import json
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

from ragdistill.run.progress import format_seconds

BAR_WIDTH = 20


def bar_text(fraction: float, width: int = BAR_WIDTH) -> str:
    """|██████▌     |: the bar tqdm draws, in text."""
    blocks = " ▏▎▍▌▋▊▉█"
    eighths = int(round(max(0.0, min(1.0, fraction)) * width * 8))
    full, part = divmod(eighths, 8)
    return "|" + "█" * full + (blocks[part] if full < width else "") + " " * (width - full - 1 + (full == width)) + "|"


def describe_bar(event: dict, now: float) -> str:
    """One line for a running bar: "base: 31/48 episodes |█████▌ | 65%  2:05 elapsed, 2:31 left"."""
    since = now - event["t"]
    elapsed = format_seconds(event["elapsed"] + since)
    head = f"{event['desc']}: " if event["desc"] else ""
    unit = event["unit"] or "it"
    if not event["total"]:
        return f"{head}{event['n']:g} {unit}  {elapsed} elapsed"
    fraction = event["n"] / event["total"]
    left = "estimating time left" if event["left"] is None else f"{format_seconds(max(0.0, event['left'] - since))} left"
    return (f"{head}{event['n']:g}/{event['total']:g} {unit} {bar_text(fraction)} {100 * fraction:3.0f}%  "
            f"{elapsed} elapsed, {left}")


def describe_done(event: dict) -> str:
    """One line for a finished bar: "base: 48/48 episodes in 5:58"."""
    head = f"{event['desc']}: " if event["desc"] else ""
    count = f"{event['n']:g}/{event['total']:g}" if event["total"] else f"{event['n']:g}"
    return f"{head}{count} {event['unit'] or 'it'} in {format_seconds(event['elapsed'])}"


def cell_summary(source: str, width: int = 60) -> str:
    """What a code cell does, in one line: its first line that is neither an import nor a comment."""
    for line in source.splitlines():
        text = line.strip()
        if text and not text.startswith(("#", "import ", "from ")):
            return text if len(text) <= width else text[: width - 1] + "…"
    return "imports"


class StageStatus:
    """Reads a stage's progress file in a thread and keeps the terminal told: on a terminal one line redrawn
    twice a second; in a log (a pipe, a file) a line when a cell or bar starts or ends and every `interval` seconds."""

    def __init__(self, label: str, events: Path, cells: int, out: TextIO | None = None, interval: float = 5.0):
        self.label, self.events, self.cells = label, events, cells
        self.out = out or sys.stdout
        self.tty = self.out.isatty()
        self.interval = interval
        self.start = time.time()
        self.bars: dict[str, dict] = {}
        self._timed: set[str] = set()  # bars whose line with a time left a log has shown
        self.cell = "starting the kernel"
        self.cell_number = 0
        self._offset = 0
        self._last_line = 0.0
        self._drawn = False
        self._lock = threading.Lock()
        self._read_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> "StageStatus":
        self.events.parent.mkdir(parents=True, exist_ok=True)
        self.events.write_text("")
        self._say(self.cell)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self._read()
        self._clear()

    def cell_started(self, cell=None, cell_index: int = 0, **kwargs) -> None:
        """nbclient's on_cell_start hook: the code cell now running."""
        if cell is not None and cell.cell_type != "code":
            return
        self._read()  # the bars of the cell before end first
        with self._lock:
            self.cell_number += 1
            self.cell = f"cell {self.cell_number}/{self.cells}: {cell_summary(cell.source if cell else '')}"
        if not self.tty:
            self._say(self.cell)

    def _loop(self) -> None:
        while not self._stop.wait(0.5 if self.tty else 1.0):
            self._read()
            now = time.time()
            if self.tty:
                self._draw(self._line(now))
            elif now - self._last_line >= self.interval:
                self._say(self._line(now))

    def _read(self) -> None:
        with self._read_lock:
            with open(self.events, "rb") as f:
                f.seek(self._offset)
                chunk = f.read()
            complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for the next read
            self._offset += len(complete)
            self._handle(complete.decode("utf-8"))

    def _handle(self, complete: str) -> None:
        for text in complete.splitlines():
            event = json.loads(text)
            with self._lock:
                new = event["bar"] not in self.bars
                timed = event["left"] is not None and event["bar"] not in self._timed
                if timed:
                    self._timed.add(event["bar"])
                if event["closed"]:
                    self.bars.pop(event["bar"], None)
                else:
                    self.bars[event["bar"]] = event
            if event["closed"] and (event["elapsed"] >= 1.0 or not self.tty):  # a blink is no news on a terminal
                self._say(describe_done(event))
            elif not event["closed"] and (new or timed) and not self.tty:  # a log learns the estimate at once
                self._say(f"{self.label}  {describe_bar(event, time.time())}")

    def _line(self, now: float) -> str:
        with self._lock:
            what = describe_bar(max(self.bars.values(), key=lambda e: e["t"]), now) if self.bars else self.cell
        return f"[{format_seconds(now - self.start)}] {self.label}  {what}"

    def _say(self, text: str) -> None:
        """A line that stays (a log line; on a terminal, above the redrawn one)."""
        line = text if text.startswith(("[", self.label)) else f"{self.label}  {text}"
        line = line if line.startswith("[") else f"[{format_seconds(time.time() - self.start)}] {line}"
        with self._lock:
            if self.tty and self._drawn:
                self.out.write("\r\x1b[K")
                self._drawn = False
            self.out.write(line + "\n")
            self.out.flush()
            self._last_line = time.time()

    def _draw(self, line: str) -> None:
        width = shutil.get_terminal_size((120, 20)).columns - 1
        with self._lock:
            self.out.write("\r" + line[:width] + "\x1b[K")
            self.out.flush()
            self._drawn = True

    def _clear(self) -> None:
        with self._lock:
            if self.tty and self._drawn:
                self.out.write("\r\x1b[K")
                self.out.flush()
                self._drawn = False
