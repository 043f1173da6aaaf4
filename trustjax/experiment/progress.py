"""Progress reporting: a tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import math
import sys
import time
from typing import Any, TextIO


def format_seconds(s: float) -> str:
  """`42s`, `3m07s`, `2h05m`; `?` when unknown."""
  if not math.isfinite(s) or s < 0:
    return "?"
  s = int(round(s))
  if s < 60:
    return f"{s}s"
  if s < 3600:
    return f"{s // 60}m{s % 60:02d}s"
  return f"{s // 3600}h{(s % 3600) // 60:02d}m"


def _fmt(v: Any) -> str:
  try:
    return f"{float(v):.4g}"
  except (TypeError, ValueError):
    return str(v)


class Progress:
  """Shows steps/s, ETA and the latest scalars (loss, epsilon, accuracy).

  `update(step, **scalars)` takes the number of steps *done* (absolute, not
  an increment). On a TTY (`stream.isatty()`): a tqdm bar. Otherwise (CI,
  redirected logs): one flushed line such as
  `train step 120/1000 (12.0%) 35.1 steps/s ETA 25s loss=0.4123 eps=1.02`
  when at least `log_every` steps or `log_seconds` seconds have passed since
  the last line, and at the final step. The rate is measured from the first
  `update` call (so jit compilation in the first step does not skew it),
  and the ETA is `(total - step) / rate`.
  """

  def __init__(self, total_steps: int, initial_step: int = 0,
               desc: str = "train", log_every: int = 100,
               log_seconds: float = 30.0, stream: TextIO | None = None,
               tty: bool | None = None):
    if total_steps < 0 or not 0 <= initial_step <= max(total_steps, 0):
      raise ValueError(f"need 0 <= initial_step={initial_step} <= "
                       f"total_steps={total_steps}")
    if log_every <= 0:
      raise ValueError(f"log_every={log_every} must be positive")
    self.total = int(total_steps)
    self.desc = desc
    self.stream = stream if stream is not None else sys.stdout
    self.log_every = int(log_every)
    self.log_seconds = float(log_seconds)
    self._initial = int(initial_step)
    self._last_step = int(initial_step)
    self._ref = None            # (time, step) of the first update
    self._last_print_step = int(initial_step)
    self._last_print_time = time.perf_counter()
    self._bar = None
    if tty is None:
      tty = bool(getattr(self.stream, "isatty", lambda: False)())
    if tty:
      from tqdm import tqdm
      self._bar = tqdm(total=self.total, initial=self._initial, desc=desc,
                       file=self.stream, dynamic_ncols=True, unit="step")

  def _rate(self, step: int, now: float) -> float:
    if self._ref is None:
      return math.nan
    t, s = self._ref
    return (step - s) / (now - t) if now > t and step > s else math.nan

  def update(self, step: int, **scalars: Any) -> None:
    step = int(step)
    now = time.perf_counter()
    if self._bar is not None:
      self._bar.update(step - self._last_step)
      if scalars:
        self._bar.set_postfix({k: _fmt(v) for k, v in scalars.items()},
                              refresh=False)
    else:
      first = self._ref is None
      if first:
        # Rate reference: the start of the run for the first line (compile
        # included, nothing better is known), this call afterwards.
        self._ref = (now, step)
        rate = (step - self._initial) / max(now - self._last_print_time,
                                            1e-9)
      else:
        rate = self._rate(step, now)
      if (step - self._last_print_step >= self.log_every or
          now - self._last_print_time >= self.log_seconds or
          step >= self.total):
        self._print(step, rate, scalars)
        self._last_print_step, self._last_print_time = step, now
    self._last_step = step

  def _print(self, step: int, rate: float, scalars: dict) -> None:
    eta = (self.total - step) / rate if rate > 0 else math.nan
    pct = 100.0 * step / self.total if self.total else 100.0
    rate_s = f"{rate:.3g} steps/s" if math.isfinite(rate) else "? steps/s"
    line = (f"{self.desc} step {step}/{self.total} ({pct:.1f}%) {rate_s} "
            f"ETA {format_seconds(eta)}")
    if scalars:
      line += " " + " ".join(f"{k}={_fmt(v)}" for k, v in scalars.items())
    print(line, file=self.stream, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None

  def __enter__(self) -> "Progress":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
