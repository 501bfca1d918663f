"""The one progress bar: rich on an interactive terminal (stderr), silent anywhere else.

Logs and CI get no bar: whoever shows one also logs the same figures as lines (per epoch in
training, every few seconds while caching a dataset), so nothing is lost off a terminal.
"""
from __future__ import annotations

import sys
from typing import Optional


class Bar:
    """``label`` and done/``total`` (with an estimate of the time left), plus a free-text
    ``stats`` column when asked for. ``enabled``: None shows it exactly when stderr is a
    terminal. Transient: the bar disappears when closed. Also a context manager."""

    def __init__(self, label: str, total: int, stats: bool = False, enabled: Optional[bool] = None):
        self._progress = None
        if sys.stderr.isatty() if enabled is None else enabled:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn()]
            if stats:
                columns.append(TextColumn("{task.fields[stats]}"))
            self._progress = Progress(*columns, TimeRemainingColumn(), transient=True)
            self._task = self._progress.add_task(label, total=total, stats="")
            self._progress.start()

    @property
    def active(self) -> bool:
        return self._progress is not None

    def update(self, completed: Optional[int] = None, advance: int = 0, stats: Optional[str] = None) -> None:
        """Set the count to ``completed`` or move it on by ``advance``; replace the stats text."""
        if self._progress is None:
            return
        fields = {} if stats is None else {"stats": stats}
        if completed is not None:
            self._progress.update(self._task, completed=completed, **fields)
        else:
            self._progress.update(self._task, advance=advance, **fields)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None

    def __enter__(self) -> "Bar":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
