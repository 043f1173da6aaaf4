"""`PrivacyBudget`: host-side tracking of spent privacy; stops before overrun.

The budget keeps the run's history as a list of (per-step DpEvent, count)
segments and asks dp_accounting for the epsilon of their composition. The
contract: `spend` never lets epsilon(history) exceed `target_epsilon` at
`delta`; a trainer calls `can_step(event)` before every step and stops when it
is False, so the released model is (target_epsilon, delta)-DP under the
accounting of the events spent (add/remove-one adjacency for DP-SGD events).

Cost. Checking one more step by recomputing the whole history would be O(T)
accountant calls over a run. Instead, for the current segment's event the
budget computes once, by exponential + binary search, the largest count m such
that epsilon(previous segments + m x event) <= target (`accounting.
max_composed_steps`); after that every `can_step`/`spend` of the same event is
O(1). A new event type (e.g. the next epoch of a noise-decay schedule) costs
one new O(log T) search.
"""

from __future__ import annotations

from typing import Any, Sequence

from dp_accounting import dp_event as dpe

from trustjax.privacy import accounting


class BudgetExceededError(RuntimeError):
  """Raised by `PrivacyBudget.spend` when the step would exceed the target."""


_EVENT_CLASSES = {
    name: getattr(dpe, name) for name in dir(dpe)
    if isinstance(getattr(dpe, name), type)
    and issubclass(getattr(dpe, name), dpe.DpEvent)
}


def event_to_json(event: dpe.DpEvent) -> Any:
  """A JSON-serialisable form of a dp_accounting DpEvent (nested dicts)."""
  if isinstance(event, dpe.DpEvent):
    name = type(event).__name__
    if _EVENT_CLASSES.get(name) is not type(event):
      raise ValueError(f"event={event!r} is not a dp_accounting.dp_event "
                       "class; cannot serialise it.")
    import attr  # dp_accounting's own dependency.
    fields = {k: event_to_json(v)
              for k, v in attr.asdict(event, recurse=False).items()}
    return {"__dp_event__": name, **fields}
  if isinstance(event, (list, tuple)):
    return [event_to_json(v) for v in event]
  if isinstance(event, dict):
    return {str(k): event_to_json(v) for k, v in event.items()}
  if isinstance(event, (bool, int, float, str)) or event is None:
    return event
  if hasattr(event, "item"):  # numpy scalar
    return event.item()
  raise ValueError(f"cannot serialise {event!r} inside a DpEvent.")


def event_from_json(obj: Any) -> Any:
  """Inverse of `event_to_json`; only dp_accounting.dp_event classes."""
  if isinstance(obj, dict) and "__dp_event__" in obj:
    name = obj["__dp_event__"]
    cls = _EVENT_CLASSES.get(name)
    if cls is None:
      raise ValueError(f"unknown DpEvent class {name!r} in saved state.")
    kwargs = {k: event_from_json(v) for k, v in obj.items()
              if k != "__dp_event__"}
    return cls(**kwargs)
  if isinstance(obj, list):
    return [event_from_json(v) for v in obj]
  if isinstance(obj, dict):
    return {k: event_from_json(v) for k, v in obj.items()}
  return obj


class PrivacyBudget:
  """Spends DpEvents step by step and refuses to exceed (target_eps, delta).

  Args:
    target_epsilon: > 0.
    delta: in (0, 1); with `num_examples`, also < 1/num_examples.
    accountant: "pld" (default) or "rdp".
    num_examples: optional, for the delta check.
    max_steps_search: upper limit of the count search (default 10^7).
    value_discretization_interval, rdp_orders: passed to the accountant.

  Usage:
    budget = PrivacyBudget(8.0, 1e-5)
    ev = mechanism.step_event()
    while budget.can_step(ev):
      train_step(); budget.spend(ev)
  """

  def __init__(self,
               target_epsilon: float,
               delta: float,
               *,
               accountant: str = "pld",
               num_examples: int | None = None,
               max_steps_search: int = 10**7,
               value_discretization_interval: float | None = None,
               rdp_orders: Sequence[float] | None = None):
    self.target_epsilon = accounting._check_positive("target_epsilon",
                                                     target_epsilon)
    self.delta = (accounting.check_delta(delta, num_examples)
                  if num_examples is not None else
                  accounting._check_delta(delta))
    self.accountant = accounting._check_accountant(accountant)
    self.num_examples = num_examples
    self.max_steps_search = accounting._check_int("max_steps_search",
                                                  max_steps_search, 1)
    self._acc_kwargs = dict(
        accountant=accountant,
        value_discretization_interval=value_discretization_interval,
        rdp_orders=None if rdp_orders is None else tuple(rdp_orders))
    self._segments: list[list] = []  # [event, count]
    self._limit_cache: dict = {}  # (num_closed_segments, repr(event)) -> max
    self._eps_cache: tuple | None = None

  # ---------------------------------------------------------------- history
  @property
  def steps(self) -> int:
    """Number of steps (events) spent."""
    return sum(c for _, c in self._segments)

  def spent_event(self) -> dpe.DpEvent:
    """The composition of everything spent (NoOpDpEvent when nothing)."""
    return self._compose(self._segments)

  @staticmethod
  def _compose(segments) -> dpe.DpEvent:
    parts = [dpe.SelfComposedDpEvent(e, c) for e, c in segments if c > 0]
    if not parts:
      return dpe.NoOpDpEvent()
    return parts[0] if len(parts) == 1 else dpe.ComposedDpEvent(parts)

  @property
  def epsilon(self) -> float:
    """Epsilon of everything spent, at `delta` (cached until next spend)."""
    key = self.steps, len(self._segments)
    if self._eps_cache is None or self._eps_cache[0] != key:
      if not self._segments:
        eps = 0.0
      else:
        eps = accounting.epsilon_from_event(self.spent_event(), self.delta,
                                            **self._acc_kwargs)
      self._eps_cache = (key, eps)
    return self._eps_cache[1]

  # ------------------------------------------------------------- spending
  def _check_event(self, event):
    if not isinstance(event, dpe.DpEvent):
      raise ValueError(f"event={event!r} must be a dp_accounting DpEvent (one "
                       "step's event, e.g. GaussianMechanism.step_event()).")

  def _closed_and_current(self, event):
    """(number of closed segments, count already spent of `event` now)."""
    if self._segments and self._segments[-1][0] == event:
      return len(self._segments) - 1, self._segments[-1][1]
    return len(self._segments), 0

  def _limit(self, event) -> int:
    closed, _ = self._closed_and_current(event)
    key = (closed, repr(event))  # ComposedDpEvent holds a list: unhashable.
    if key not in self._limit_cache:
      prefix = self._compose(self._segments[:closed])
      self._limit_cache[key] = accounting.max_composed_steps(
          event, self.target_epsilon, self.delta,
          prefix=None if isinstance(prefix, dpe.NoOpDpEvent) else prefix,
          max_steps=self.max_steps_search, **self._acc_kwargs)
    return self._limit_cache[key]

  def max_steps(self, step_event: dpe.DpEvent) -> int:
    """How many more steps of `step_event` fit in the budget from now."""
    self._check_event(step_event)
    _, current = self._closed_and_current(step_event)
    return max(0, self._limit(step_event) - current)

  def can_step(self, event: dpe.DpEvent, count: int = 1) -> bool:
    """Whether spending `count` more `event`s keeps epsilon <= target."""
    count = accounting._check_int("count", count, 1)
    return self.max_steps(event) >= count

  def spend(self, event: dpe.DpEvent, count: int = 1) -> None:
    """Records `count` steps of `event`; raises BudgetExceededError instead
    of exceeding the target (nothing is recorded then)."""
    if not self.can_step(event, count):
      raise BudgetExceededError(
          f"spending {count} more step(s) of {event!r} would exceed "
          f"target_epsilon={self.target_epsilon} at delta={self.delta} "
          f"(spent {self.steps} steps, epsilon {self.epsilon:.4g}).")
    if self._segments and self._segments[-1][0] == event:
      self._segments[-1][1] += count
    else:
      self._segments.append([event, count])

  # ------------------------------------------------------------ state
  def state_dict(self) -> dict[str, Any]:
    """JSON-serialisable state; `from_state_dict` restores it exactly."""
    return {
        "target_epsilon": self.target_epsilon,
        "delta": self.delta,
        "accountant": self.accountant,
        "num_examples": self.num_examples,
        "max_steps_search": self.max_steps_search,
        "value_discretization_interval":
            self._acc_kwargs["value_discretization_interval"],
        "rdp_orders": (None if self._acc_kwargs["rdp_orders"] is None else
                       list(self._acc_kwargs["rdp_orders"])),
        "segments": [[event_to_json(e), int(c)] for e, c in self._segments],
    }

  @classmethod
  def from_state_dict(cls, state: dict[str, Any]) -> "PrivacyBudget":
    state = dict(state)
    segments = state.pop("segments")
    budget = cls(state.pop("target_epsilon"), state.pop("delta"), **state)
    for e, c in segments:
      budget._segments.append([event_from_json(e), int(c)])
    return budget

  def __repr__(self) -> str:
    return (f"PrivacyBudget(target_epsilon={self.target_epsilon}, "
            f"delta={self.delta}, steps={self.steps})")


def steps_within_budget(step_event: dpe.DpEvent, target_epsilon: float,
                        delta: float, **kwargs) -> int:
  """Max number of `step_event` steps with epsilon <= target (fresh budget)."""
  return PrivacyBudget(target_epsilon, delta, **kwargs).max_steps(step_event)
