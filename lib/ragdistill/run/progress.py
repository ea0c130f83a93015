"""Progress bars: widgets in JupyterLab (tqdm.auto), and in the chain's headless runs one final line per bar in the
notebook while the live state goes to the terminal that runs the chain."""

from __future__ import annotations

import itertools
import json
import os
import sys
import threading
import time

from tqdm.std import tqdm as _std_tqdm

# Set by pipeline.execute for the kernels papermill starts, to the file the bars report to (one JSON line per update;
# the pipeline draws them in the terminal). No one watches a widget there, and an executed notebook's copy of one
# shows it as it was first drawn, at 0%.
TEXT_PROGRESS = "RAGDISTILL_TEXT_PROGRESS"
HEADLESS = bool(os.environ.get(TEXT_PROGRESS))

_write_lock = threading.Lock()


def report(event: dict) -> None:
    """Append one progress event to the run's progress file (nothing outside a headless run)."""
    path = os.environ.get(TEXT_PROGRESS, "")
    if not path or path == "1":  # "1": headless, with no one reading the events
        return
    with _write_lock, open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(event) + "\n")


class _Null:
    """Where a headless bar draws while it runs: nowhere (the notebook gets its final line only)."""

    def write(self, text: str) -> None:
        pass

    def flush(self) -> None:
        pass


class HeadlessBar(_std_tqdm):
    """A bar that draws nothing while it runs: its state goes to the progress file, its last line to stdout."""

    _ids = itertools.count()

    def __init__(self, *args, **kwargs):
        # Set before tqdm's own __init__, which draws (reports) once already.
        self.time_left: float | None = None
        self._bar_id = f"{os.getpid()}-{next(self._ids)}"
        self._last_report = 0.0
        self._reported_close = False
        kwargs["file"] = _Null()
        kwargs.setdefault("mininterval", 0.5)
        kwargs.setdefault("ascii", False)  # the final line is read in a notebook, which shows the blocks
        super().__init__(*args, **kwargs)

    def display(self, msg=None, pos=None):
        self._report()
        return True

    def _report(self, closed: bool = False) -> None:
        now = time.time()
        if self._reported_close or (not closed and self._last_report and now - self._last_report < 0.5):
            return
        self._last_report = now
        d = self.format_dict
        rate = d.get("rate") or (d["n"] / d["elapsed"] if d["elapsed"] and d["n"] else None)
        left = self.time_left
        if left is None and rate and d["total"]:
            left = max(0.0, (d["total"] - d["n"]) / rate)
        report({"bar": self._bar_id, "desc": d.get("prefix") or "", "n": d["n"], "total": d["total"],
                "unit": d.get("unit", "it"), "elapsed": d["elapsed"], "left": left, "closed": closed, "t": now})

    def close(self):
        if self.disable or self._reported_close:
            return super().close()
        line = self.__str__()
        self._report(closed=True)
        self._reported_close = True
        leave = self.leave or (self.leave is None and self.pos == 0)
        super().close()
        if leave:  # stdout: a stderr line would show as a red block in the notebook
            print(line, file=sys.stdout, flush=True)


def set_time_left(bar, seconds: float | None) -> None:
    """An estimate of the time left that the caller knows better than the bar's rate (a batch's episodes end
    together, so episodes per second say little until the end)."""
    if isinstance(bar, HeadlessBar):
        bar.time_left = seconds
        bar._report()
    elif not bar.disable and seconds is not None:
        bar.set_postfix_str(f"about {format_seconds(seconds)} left", refresh=False)


def format_seconds(seconds: float) -> str:
    """1:05:09, 4:05 or 0:07: what a person reads as a duration."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02d}:{rest % 60:02d}" if hours else f"{rest // 60}:{rest % 60:02d}"


def _headless_everywhere() -> None:
    """Libraries' own bars (transformers' weight loading and training, datasets' maps) take their class from
    tqdm.auto: give them the headless one too, before they are imported."""
    import tqdm.auto
    import tqdm.autonotebook

    tqdm.auto.tqdm = HeadlessBar
    tqdm.autonotebook.tqdm = HeadlessBar


if HEADLESS:
    tqdm = HeadlessBar
    _headless_everywhere()
else:
    from tqdm.auto import tqdm

__all__ = ["HEADLESS", "TEXT_PROGRESS", "HeadlessBar", "format_seconds", "report", "set_time_left", "tqdm"]
