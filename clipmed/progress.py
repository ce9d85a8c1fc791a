"""Progress of long work on the console: a live bar on a terminal, plain lines in a log file.

Training, evaluation and data preparation report through `Progress` (a counted phase) and `say` (a
status line). Both write to stdout. When stdout is a terminal the bar redraws in place (tqdm) and
status lines appear above it; otherwise (SLURM logs, CI, a pipe) a plain line is printed every
`every` units, or every `interval` seconds when `every` is not given, and once at the end, so a log
file reads top to bottom:

    train: 40/100 steps (40%), 5.3 steps/s, 0:00:11 left, loss 4.2413, lr 1.8e-05

Multi-process jobs create their bars with enabled=(jax.process_index() == 0).
"""

import os
import sys
import time
from typing import Any, TextIO

import tqdm

_PLAIN_INTERVAL_S = 30.0


def _stream() -> TextIO:
  return sys.stdout


def is_terminal() -> bool:
  """True when stdout is an interactive terminal with a width (bars redraw in place)."""
  stream = _stream()
  try:
    return stream.isatty() and os.get_terminal_size(stream.fileno()).columns > 0
  except (AttributeError, OSError, ValueError):  # replaced streams (pytest, notebooks)
    return False


def say(message: str) -> None:
  """Prints one status line, above any live progress bar."""
  if is_terminal():
    tqdm.tqdm.write(message, file=_stream())
  else:
    print(message, file=_stream(), flush=True)


def _duration(seconds: float) -> str:
  seconds = int(round(seconds))
  return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def _format_value(value: Any) -> str:
  if isinstance(value, float):
    return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.4f}"
  return str(value)


class Progress:
  """A counted phase (steps, studies, images) with rate and time left; `unit` is plural.

  Use as a context manager, or call close(). `postfix` values (e.g. the latest loss) are shown
  after the rate; set them before the update that should print them.
  """

  def __init__(self, total: int, desc: str, unit: str = "items", *, initial: int = 0,
               every: int | None = None, interval: float = _PLAIN_INTERVAL_S,
               enabled: bool = True):
    self.total, self.desc, self.unit = int(total), desc, unit
    self.n = self._start_n = int(initial)
    self.every, self.interval, self.enabled = every, interval, enabled
    self.postfix: dict[str, Any] = {}
    self._start = self._last_line = time.perf_counter()
    self._rate_from: tuple[float, int] | None = None  # (time, count) of the first update
    self._printed_n = None
    self._closed = False
    self._bar = None
    if enabled and is_terminal():
      self._bar = tqdm.tqdm(total=self.total, initial=self.n, desc=desc, unit=f" {unit}",
                            file=_stream(), dynamic_ncols=True, leave=True, mininterval=0.5)

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc) -> None:
    self.close()

  def update(self, n: int = 1) -> None:
    self.n += n
    if self._rate_from is None:  # the rate leaves out the first update (a compile, a warm-up)
      self._rate_from = (time.perf_counter(), self.n)
    if not self.enabled:
      return
    if self._bar is not None:
      self._bar.update(n)
      return
    now = time.perf_counter()
    due = (self.n % self.every == 0) if self.every else (now - self._last_line >= self.interval)
    if due or self.n == self.total:
      self._print_line(now)

  def set_postfix(self, **values: Any) -> None:
    self.postfix.update(values)
    if self._bar is not None:
      self._bar.set_postfix({k: _format_value(v) for k, v in self.postfix.items()}, refresh=False)

  def reset(self, total: int, desc: str | None = None) -> None:
    """Starts a new counted phase on the same bar (e.g. reports, then images)."""
    self.total, self.n, self._start_n = int(total), 0, 0
    self.desc = desc or self.desc
    self._start = self._last_line = time.perf_counter()
    self._rate_from = None
    self._printed_n = None
    if self._bar is not None:
      self._bar.reset(total=self.total)
      self._bar.set_description(self.desc)

  def write(self, message: str) -> None:
    """A status line (above the bar on a terminal); printed on enabled bars only."""
    if self.enabled:
      say(message)

  def close(self) -> None:
    if self._closed:
      return
    self._closed = True
    if self._bar is not None:
      self._bar.close()
      self._bar = None
    elif self.enabled and self._printed_n != self.n and self.n > self._start_n:
      self._print_line(time.perf_counter())

  def line(self) -> str:
    """The plain progress line for the current count."""
    now = time.perf_counter()
    elapsed = now - self._start
    since, since_n = self._rate_from or (self._start, self._start_n)
    if self.n > since_n:
      rate = (self.n - since_n) / max(now - since, 1e-9)
    else:  # one update so far: all we have
      rate = (self.n - self._start_n) / max(elapsed, 1e-9)
    parts = [f"{self.desc}: {self.n}/{self.total} {self.unit}"]
    if self.total:
      parts[0] += f" ({100 * self.n // self.total}%)"
    parts.append(f"{rate:.3g} {self.unit}/s")
    if rate > 0 and self.n < self.total:
      parts.append(f"{_duration((self.total - self.n) / rate)} left")
    elif self.n >= self.total:
      parts.append(f"{_duration(elapsed)} in all")
    parts += [f"{k} {_format_value(v)}" for k, v in self.postfix.items()]
    return ", ".join(parts)

  def _print_line(self, now: float) -> None:
    self._last_line, self._printed_n = now, self.n
    say(self.line())
