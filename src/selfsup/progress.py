"""Feedback on long work: a rich progress bar on a terminal, else a periodic one-line status.

    with Progress(10000, "optimize", "calls") as bar:
        ...
        bar.update(1200, best=0.912)

On a terminal (stderr) this draws a rich bar; otherwise (a log file, a batch job) it prints
``[optimize] 1200/10000 calls (12%)  best=0.912  35s`` at the first update, then at most every
``$SELFSUP_PROGRESS_SECONDS`` seconds (default 30; 0 prints every update), and a final line at the
end. Nothing is shown unless :data:`ENABLED` is true: the command line turns it on for the length
of a command, so library calls and tests stay quiet.
"""

from __future__ import annotations

import math
import os
import sys
import time
from typing import Any, TextIO

ENABLED = False  # switched on by ``selfsup.cli.main`` (see :func:`enable`)
ENV_SECONDS = "SELFSUP_PROGRESS_SECONDS"
DEFAULT_SECONDS = 30.0

_live: list[Any] = []  # the rich Progress on screen (nested reporters add a task to it)


def enable(on: bool = True) -> bool:
    """Turn progress reporting on or off; returns the previous setting (to restore it)."""
    global ENABLED
    was, ENABLED = ENABLED, bool(on)
    return was


def interval_seconds() -> float:
    """Seconds between plain status lines: $SELFSUP_PROGRESS_SECONDS, else 30 (bad values too)."""
    raw = os.environ.get(ENV_SECONDS, "").strip()
    try:
        value = float(raw) if raw else DEFAULT_SECONDS
    except ValueError:
        return DEFAULT_SECONDS
    return value if math.isfinite(value) and value >= 0 else DEFAULT_SECONDS


def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def _duration(seconds: float) -> str:
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s // 60 % 60:02d}m"


class Progress:
    """Reports ``done`` of ``total`` ``unit`` plus a few ``key=value`` figures (see the module).

    ``total`` may be None (unknown). ``stream`` (default: stderr at creation), ``interval``
    (default: :func:`interval_seconds`) and ``enabled`` (default: :data:`ENABLED`) are for tests.
    ``rich`` forces the bar on or off; by default it is drawn when the stream is a terminal.
    """

    def __init__(self, total: int | None, description: str, unit: str = "steps", *,
                 stream: TextIO | None = None, interval: float | None = None,
                 enabled: bool | None = None, rich: bool | None = None) -> None:
        self.total = total
        self.description = description
        self.unit = unit
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval_seconds() if interval is None else float(interval)
        self.enabled = ENABLED if enabled is None else enabled
        if rich is None:
            rich = self.enabled and bool(getattr(self.stream, "isatty", lambda: False)())
        self.rich = rich
        self.done = 0
        self.status: dict[str, Any] = {}
        self.t0 = time.monotonic()
        self._printed_at: float | None = None
        self._printed: str | None = None
        self._pending = False  # an update not printed yet
        self._bar: Any = None
        self._task: Any = None
        self._owns_bar = False

    # ------------------------------------------------------------------------------ life
    def __enter__(self) -> Progress:
        if self.enabled and self.rich:
            self._start_bar()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import Progress as RichProgress

        if _live:
            self._bar = _live[-1]
        else:
            self._bar = RichProgress(
                TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                TextColumn("{task.fields[unit]}"), TimeElapsedColumn(), TextColumn("<"),
                TimeRemainingColumn(), TextColumn("{task.fields[status]}"),
                console=Console(file=self.stream), transient=False)
            self._bar.start()
            self._owns_bar = True
            _live.append(self._bar)
        self._task = self._bar.add_task(self.description, total=self.total, completed=self.done,
                                        unit=self.unit, status="")

    def close(self) -> None:
        """End the report: stop the bar, or print the final line (once)."""
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done, status=self._status_text())
            if self._owns_bar:
                self._bar.stop()
                _live.remove(self._bar)
            else:
                self._bar.remove_task(self._task)
            self._bar = None
        elif self.enabled and not self.rich and (self._pending or self._printed is None):
            self._emit()

    # --------------------------------------------------------------------------- updates
    def update(self, done: int, **status: Any) -> None:
        """``done`` units so far, and figures to show (they replace earlier ones by key)."""
        self.done = done
        self.status.update(status)
        if not self.enabled:
            return
        if self._bar is not None:
            self._bar.update(self._task, completed=done, status=self._status_text())
            return
        if self.rich:
            return
        now = time.monotonic()
        if self._printed_at is None or now - self._printed_at >= self.interval:
            self._emit(now)
        else:
            self._pending = True

    def _status_text(self) -> str:
        return "  ".join(f"{k}={_fmt(v)}" for k, v in self.status.items())

    def line(self) -> str:
        """The plain status line of the current state."""
        if self.total:
            pct = 100 * self.done // self.total  # floored: 100% only when done
            count = f"{self.done}/{self.total} {self.unit} ({pct}%)"
        else:
            count = f"{self.done} {self.unit}"
        parts = [f"[{self.description}] {count}"]
        if self.status:
            parts.append(self._status_text())
        parts.append(_duration(time.monotonic() - self.t0))
        return "  ".join(parts)

    def _emit(self, now: float | None = None) -> None:
        text = self.line()
        print(text, file=self.stream, flush=True)
        self._printed, self._printed_at = text, time.monotonic() if now is None else now
        self._pending = False
