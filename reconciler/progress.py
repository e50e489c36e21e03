"""Progress reporting for long reads and writes: bars on a terminal, plain lines otherwise, or none.

The stores call ``task(description, total)`` and then ``advance(n)`` on what it returns; they never
know how (or whether) it is shown. Output goes to stderr so that stdout stays the plan or report.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Protocol


class Task(Protocol):
    def advance(self, amount: int = 1) -> None: ...

    def close(self) -> None: ...


class Progress(Protocol):
    def task(self, description: str, total: int | None = None) -> Task: ...


class _SilentTask:
    def advance(self, amount: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


class Silent:
    """No progress output (``--quiet``, and library use)."""

    def task(self, description: str, total: int | None = None) -> Task:
        return _SilentTask()


class _LineTask:
    """A line when a task starts, at most one every few seconds while it runs, and one at the end."""

    def __init__(self, description: str, total: int | None, every: float) -> None:
        self.description, self.total, self.every = description, total, every
        self.done = 0
        self.started = self.last = time.monotonic()
        self._line(f"{description}…")

    def advance(self, amount: int = 1) -> None:
        self.done += amount
        now = time.monotonic()
        if now - self.last >= self.every:
            self.last = now
            of = f" of {self.total}" if self.total else ""
            self._line(f"{self.description}: {self.done}{of}")

    def close(self) -> None:
        self._line(f"{self.description}: {self.done} in {time.monotonic() - self.started:.1f}s")

    @staticmethod
    def _line(text: str) -> None:
        print(text, file=sys.stderr, flush=True)


class Lines:
    """Plain lines, for CI logs and pipes."""

    def __init__(self, every: float = 10.0) -> None:
        self.every = every

    def task(self, description: str, total: int | None = None) -> Task:
        return _LineTask(description, total, self.every)


class _BarTask:
    def __init__(self, bars, description: str, total: int | None) -> None:
        self.bars = bars
        self.id = bars.add_task(description, total=total)

    def advance(self, amount: int = 1) -> None:
        self.bars.advance(self.id, amount)

    def close(self) -> None:
        self.bars.stop_task(self.id)


class Bars:
    """Progress bars on a terminal (rich)."""

    def __init__(self, color: bool = True) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        console = Console(stderr=True, color_system="auto" if color else None)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=console, transient=False)
        self.bars.start()

    def task(self, description: str, total: int | None = None) -> Task:
        return _BarTask(self.bars, description, total)

    def stop(self) -> None:
        self.bars.stop()


def choose(quiet: bool, color: bool = True) -> Progress:
    """Bars on a terminal, lines when piped or in CI, nothing with --quiet. ``color``: False for
    --no-color (rich itself honours NO_COLOR)."""
    if quiet:
        return Silent()
    if sys.stderr.isatty() and not os.environ.get("CI"):
        return Bars(color)
    return Lines()
