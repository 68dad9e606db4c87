"""The one progress display of caloforge: a bar on a terminal, plain lines in a log.

On a terminal, :func:`make_progress` gives a rich progress bar whose line is laid out for the
terminal's width: description, bar, count, free-text info, elapsed time and ETA; on a narrow
terminal the bar shrinks first, then the info moves to a line of its own, so nothing is cut.

When the console is not a terminal (a batch job, output redirected to a file or a pipe), a bar
would be redrawn into the log or, with rich's defaults, not written at all until the end. Then
every task writes a plain line every ``CALOFORGE_PROGRESS_INTERVAL`` seconds (default
:data:`DEFAULT_INTERVAL`; ``0`` for every second) with its count, percentage, rate, elapsed time
and ETA, and one line when it is done::

    generating with cfm: 4,000/10,000 (40.0%), 412 showers/s, elapsed 0:00:10, eta 0:00:15
    generating with cfm: done, 10,000/10,000 in 0:00:24 (416 showers/s)

Tasks carry an ``info`` field (free text such as the loss) and may carry a ``unit`` (``steps``,
``showers``...): the rate is shown for tasks with a unit.
"""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Iterable
from typing import Any

from rich.console import Console, RenderableType
from rich.progress import Progress, Task, TaskID
from rich.text import Text

from caloforge import _signals

#: Seconds between two plain progress lines when the output is not a terminal.
DEFAULT_INTERVAL = 20.0
INTERVAL_ENV = "CALOFORGE_PROGRESS_INTERVAL"
_BAR_MAX = 40
_BAR_MIN = 10


def progress_interval(console: Console | None = None) -> float:
    """Seconds between plain progress lines: ``$CALOFORGE_PROGRESS_INTERVAL`` (a number >= 0)
    or :data:`DEFAULT_INTERVAL`; an unreadable value gives the default (with a note on ``console``)."""
    text = os.environ.get(INTERVAL_ENV, "").strip()
    if not text:
        return DEFAULT_INTERVAL
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and math.isfinite(value)):
        if console is not None:
            console.print(Text(f"note: {INTERVAL_ENV}={text!r} is not a number of seconds >= 0; "
                               f"using {DEFAULT_INTERVAL:g}"), soft_wrap=True)
        return DEFAULT_INTERVAL
    return value


def format_duration(seconds: float | None) -> str:
    """``H:MM:SS`` (``Nd H:MM:SS`` beyond a day); ``-:--:--`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-:--:--"
    s = int(round(seconds))
    days, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    return (f"{days}d " if days else "") + f"{h}:{m:02d}:{s:02d}"


def _num(x: float) -> str:
    return f"{int(x):,}" if float(x).is_integer() else f"{x:,.1f}"


def _rate_text(rate: float | None, unit: str) -> str:
    if rate is None or not math.isfinite(rate):
        return ""
    if rate >= 100:
        r = f"{rate:,.0f}"
    elif rate >= 1:
        r = f"{rate:.1f}"
    else:
        r = f"{rate:.2g}"
    return f"{r} {unit}/s" if unit else f"{r}/s"


class CaloProgress(Progress):
    """A rich :class:`~rich.progress.Progress` with caloforge's layout (see the module text);
    made by :func:`make_progress`. ``log_lines``: write plain lines instead of a bar (None:
    when the console is not a terminal); ``interval``: seconds between them (None: from the
    environment)."""

    def __init__(self, console: Console, transient: bool = False, disable: bool = False,
                 log_lines: bool | None = None, interval: float | None = None) -> None:
        if log_lines is None:
            log_lines = not console.is_jupyter and (not console.is_terminal or console.is_dumb_terminal)
        self.log_lines = bool(log_lines) and not disable
        super().__init__(console=console, transient=transient, disable=disable or self.log_lines)
        self.interval = 0.0
        if self.log_lines:
            self.interval = progress_interval(console) if interval is None else max(float(interval), 0.0)
        self._transient = transient
        self._meta: dict[TaskID, dict[str, Any]] = {}
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ tasks
    def add_task(self, description: str, start: bool = True, total: float | None = 100.0,
                 completed: int = 0, visible: bool = True, **fields: Any) -> TaskID:
        fields.setdefault("info", "")
        fields.setdefault("unit", "")
        task_id = super().add_task(description, start=start, total=total, completed=completed,
                                   visible=visible, **fields)
        self._meta[task_id] = {"initial": completed, "last": self.get_time(), "ended": False}
        return task_id

    def update(self, task_id: TaskID, *, total: float | None = None, completed: float | None = None,
               advance: float | None = None, description: str | None = None, visible: bool | None = None,
               refresh: bool = False, **fields: Any) -> None:
        _signals.check()  # a Ctrl-C that a finaliser swallowed stops the step here
        super().update(task_id, total=total, completed=completed, advance=advance, description=description,
                       visible=visible, refresh=refresh, **fields)
        self._check_finished(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        _signals.check()
        super().advance(task_id, advance)
        self._check_finished(task_id)

    def rate(self, task: Task) -> float | None:
        """Items per second: rich's recent speed while running, else (and once finished) the
        average since the task started."""
        if not task.finished and task.speed is not None and task.speed > 0:
            return task.speed
        elapsed = (task.finished_time if task.finished_time is not None else task.elapsed) or 0.0
        done = task.completed - self._meta.get(task.id, {}).get("initial", 0.0)
        return done / elapsed if elapsed > 0 and done > 0 else None

    def eta(self, task: Task) -> float | None:
        """Seconds left at :meth:`rate` (None: unknown)."""
        if task.finished:
            return 0.0
        rate = self.rate(task)
        if task.total is None or rate is None:
            return None
        return max(task.total - task.completed, 0.0) / rate

    # --------------------------------------------------------- plain lines
    def line(self, task: Task, kind: str = "progress") -> str:
        """One plain progress line: ``kind`` is ``progress``, ``done`` or ``stopped``."""
        unit = str(task.fields.get("unit") or "")
        count = _num(task.completed) if task.total is None else f"{_num(task.completed)}/{_num(task.total)}"
        pct = f" ({100.0 * task.completed / task.total:.1f}%)" if task.total else ""
        rate = _rate_text(self.rate(task), unit) if unit else ""  # a rate means something with a unit
        elapsed = format_duration(task.finished_time if task.finished_time is not None else task.elapsed)
        info = str(task.fields.get("info") or "")
        tail = f" | {info}" if info else ""
        if kind == "done":
            return f"{task.description}: done, {count} in {elapsed}" + (f" ({rate})" if rate else "") + tail
        if kind == "stopped":
            return f"{task.description}: stopped at {count}{pct} after {elapsed}" + tail
        parts = [f"{task.description}: {count}{pct}"] + ([rate] if rate else [])
        parts += [f"elapsed {elapsed}", f"eta {format_duration(self.eta(task))}"]
        return ", ".join(parts) + tail

    def _say(self, lines: list[str]) -> None:
        for text in lines:
            self.console.print(Text(text), soft_wrap=True, highlight=False)

    def _check_finished(self, task_id: TaskID) -> None:
        if not self.log_lines:
            return
        with self._lock:
            task, meta = self._tasks[task_id], self._meta.get(task_id)
            if meta is None or meta["ended"] or not task.finished:
                return
            meta["ended"] = True
            text = None if self._transient else self.line(task, "done")
        if text:
            self._say([text])

    def emit_due(self) -> list[str]:
        """Write (and return) a plain line for every running task whose last line is at least
        ``interval`` seconds old; the log-line thread calls it about every second."""
        now = self.get_time()
        lines = []
        with self._lock:
            for task in self._tasks.values():
                meta = self._meta.get(task.id)
                if meta is None or meta["ended"] or not task.visible or not task.started:
                    continue
                if now - meta["last"] >= self.interval:
                    meta["last"] = now
                    lines.append(self.line(task))
        self._say(lines)
        return lines

    def _tick(self) -> None:
        step = min(max(self.interval, 0.01), 1.0)
        while not self._stop_event.wait(step):
            self.emit_due()

    def start(self) -> None:
        super().start()
        if self.log_lines and self._thread is None:
            self._stop_event.clear()
            self._thread = threading.Thread(target=self._tick, name="caloforge-progress", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._stop_event.set()
            self._thread.join()
            self._thread = None
        if self.log_lines:
            lines = []
            with self._lock:
                for task in self._tasks.values():
                    meta = self._meta.get(task.id)
                    if meta is None or meta["ended"] or not task.visible:
                        continue
                    meta["ended"] = True
                    if not self._transient:
                        lines.append(self.line(task, "done" if task.finished else "stopped"))
            self._say(lines)
        super().stop()

    # ------------------------------------------------------ terminal layout
    def get_renderables(self) -> Iterable[RenderableType]:
        if "live" not in self.__dict__:  # rich asks once while constructing, before any task
            return
        yield from self.task_lines(self.tasks, self.console.width)

    def task_lines(self, tasks: Iterable[Task], width: int) -> list[Text]:
        """The bar lines of ``tasks`` for a terminal ``width`` columns wide: the bar shrinks
        (to nothing) before the info moves below, and nothing is ever cut with an ellipsis."""
        rows = []
        for task in tasks:
            if not task.visible:
                continue
            count = _num(task.completed) if task.total is None else f"{_num(task.completed)}/{_num(task.total)}"
            elapsed = format_duration(task.finished_time if task.finished_time is not None else task.elapsed)
            times = f"{elapsed} eta {format_duration(self.eta(task))}"
            unit = str(task.fields.get("unit") or "")
            rate = _rate_text(self.rate(task), unit) if unit else ""
            info = "  ".join(x for x in (rate, str(task.fields.get("info") or "")) if x)
            rows.append((task, task.description, count, info, times))
        if not rows:
            return []
        w_desc = min(max(len(r[1]) for r in rows), max(12, width // 3))
        w_count = max(len(r[2]) for r in rows)
        w_info = max(len(r[3]) for r in rows)
        w_times = max(len(r[4]) for r in rows)
        fixed = w_desc + w_count + w_times + 3  # three separating spaces around bar and times
        info_inline = fixed + (w_info + 1 if w_info else 0) + 1 + _BAR_MIN <= width
        room = width - fixed - 1 - ((w_info + 1 if w_info else 0) if info_inline else 0)
        bar_w = min(_BAR_MAX, room) if room >= _BAR_MIN else 0
        lines = []
        for task, desc, count, info, times in rows:
            t = Text()
            t.append(desc.ljust(w_desc) if len(desc) <= w_desc else desc, style="bold")
            if bar_w:
                t.append(" ")
                t.append_text(self._bar(task, bar_w))
            t.append(" " + count.rjust(w_count))
            if info_inline and w_info:
                t.append(" " + info.ljust(w_info))
            t.append(" " + times)
            lines.append(t)
            if info and not info_inline:
                lines.append(Text("  " + info))
        return lines

    def _bar(self, task: Task, width: int) -> Text:
        if not task.total:
            return Text(" " * width)
        done = int(round(width * min(max(task.completed / task.total, 0.0), 1.0)))
        style = "bar.finished" if task.finished else "bar.complete"
        bar = Text("━" * done, style=style)
        rest = "━" if self.console.color_system is not None else " "
        bar.append(rest * (width - done), style="bar.back")
        return bar


def make_progress(console: Console, transient: bool = False, disable: bool = False,
                  log_lines: bool | None = None, interval: float | None = None) -> CaloProgress:
    """A progress display on ``console``: a bar on a terminal, plain lines otherwise (see the
    module text). Tasks may set ``info`` (free text such as loss or showers/s) and ``unit``."""
    return CaloProgress(console, transient=transient, disable=disable, log_lines=log_lines, interval=interval)

