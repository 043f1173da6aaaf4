"""Progress reporting: a tqdm bar on a terminal, plain lines otherwise."""

from __future__ import annotations

import sys
import time


class Progress:
  """Shows steps/s, ETA and the latest scalars (loss, epsilon, ...).

  On a TTY a tqdm bar; elsewhere (CI, log files) one plain line every
  `log_every` steps or `log_seconds` seconds, whichever comes first.
  """

  def __init__(self, total_steps: int, initial_step: int = 0,
               desc: str = "train", log_every: int = 100,
               log_seconds: float = 30.0, stream=None):
    self.total = int(total_steps)
    self.desc = desc
    self.stream = stream or sys.stdout
    self.log_every = log_every
    self.log_seconds = log_seconds
    self._start_step = initial_step
    self._t0 = time.perf_counter()
    self._last_print = self._t0
    self._last_step = initial_step
    self._bar = None
    if getattr(self.stream, "isatty", lambda: False)():
      from tqdm import tqdm
      self._bar = tqdm(total=self.total, initial=initial_step, desc=desc,
                       file=self.stream, dynamic_ncols=True)

  def update(self, step: int, **scalars: float) -> None:
    now = time.perf_counter()
    if self._bar is not None:
      self._bar.update(step - self._last_step)
      if scalars:
        self._bar.set_postfix({k: f"{v:.4g}" for k, v in scalars.items()})
    elif (step - self._start_step) % self.log_every == 0 or \
        now - self._last_print >= self.log_seconds or step == self.total:
      rate = (step - self._start_step) / max(now - self._t0, 1e-9)
      eta = (self.total - step) / rate if rate > 0 else float("inf")
      extra = " ".join(f"{k}={v:.4g}" for k, v in scalars.items())
      print(f"{self.desc} step {step}/{self.total} "
            f"({100.0 * step / max(self.total, 1):.1f}%) {rate:.2f} steps/s "
            f"ETA {eta:.0f}s {extra}".rstrip(), file=self.stream, flush=True)
      self._last_print = now
    self._last_step = step

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
