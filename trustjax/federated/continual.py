"""Continual federated data: clients gain examples over rounds and delete
them under a storage cap.

Each example has an owner (`client_of_example`) and an arrival round. A
`ContinualStore` replays arrivals round by round; every client holds at
most `cap` examples and, when over it, deletes by a policy:

* "fifo": the oldest held examples go first;
* "random": uniformly random held examples go;
* "reservoir": reservoir sampling (Vitter's algorithm R): after s arrivals a
  client holds a uniform random subset of size min(s, cap) of everything it
  ever received.

The static setting is the special case of all arrivals at round 0 and no
cap. Randomness is a function of (seed, round, client), so two stores fed
the same arrivals agree, and `state_dict()` resumes one exactly.
"""

from __future__ import annotations

from typing import Mapping

import numpy as np

from trustjax.federated.data import FederatedData

POLICIES = ("fifo", "random", "reservoir")


def uniform_arrivals(client_of_example: np.ndarray, num_rounds: int, *,
                     seed: int) -> np.ndarray:
  """Arrival round of each example, uniform over [0, num_rounds)."""
  if num_rounds < 1:
    raise ValueError(f"num_rounds={num_rounds} must be >= 1")
  n = len(np.asarray(client_of_example))
  return np.random.default_rng([seed, 11]).integers(0, num_rounds, n)


class ContinualStore:
  """What every client holds, round after round."""

  def __init__(self, client_of_example: np.ndarray,
               arrival_round: np.ndarray, num_clients: int, *,
               cap: int | None = None, policy: str = "fifo", seed: int = 0):
    self.client_of_example = np.asarray(client_of_example, np.int64)
    self.arrival_round = np.asarray(arrival_round, np.int64)
    if self.client_of_example.shape != self.arrival_round.shape:
      raise ValueError(
          f"client_of_example {self.client_of_example.shape} and "
          f"arrival_round {self.arrival_round.shape} must have one entry per "
          "example")
    if policy not in POLICIES:
      raise ValueError(f"policy={policy!r}; valid: {POLICIES}")
    if cap is not None and cap < 1:
      raise ValueError(f"cap={cap} must be >= 1 (or None for no cap)")
    if len(self.arrival_round) and self.arrival_round.min() < 0:
      raise ValueError("arrival rounds must be >= 0")
    self.num_clients = int(num_clients)
    self.cap, self.policy, self.seed = cap, policy, seed
    order = np.lexsort((np.arange(len(self.arrival_round)),
                        self.arrival_round))
    self._order = order                 # examples by (round, index)
    self._next = 0                      # position in _order not yet arrived
    self.round = -1                     # last round processed
    self.held = [[] for _ in range(self.num_clients)]
    self.seen = np.zeros(self.num_clients, np.int64)

  def _arrive(self, client: int, examples: list[int], rnd: int) -> None:
    held = self.held[client]
    cap = self.cap
    rng = np.random.default_rng([self.seed, rnd, client])
    if self.policy == "reservoir" and cap is not None:
      for e in examples:
        self.seen[client] += 1
        if len(held) < cap:
          held.append(e)
        else:
          j = int(rng.integers(self.seen[client]))
          if j < cap:
            held[j] = e
      return
    held.extend(examples)
    self.seen[client] += len(examples)
    if cap is None or len(held) <= cap:
      return
    if self.policy == "fifo":
      del held[:len(held) - cap]
    else:  # random (and reservoir without a cap never gets here)
      keep = np.sort(rng.choice(len(held), size=cap, replace=False))
      self.held[client] = [held[i] for i in keep]

  def advance_to(self, rnd: int) -> None:
    """Processes all arrivals of rounds (self.round, rnd]."""
    if rnd < self.round:
      raise ValueError(f"cannot go back from round {self.round} to {rnd}")
    while self.round < rnd:
      self.round += 1
      start = self._next
      while self._next < len(self._order) and \
          self.arrival_round[self._order[self._next]] <= self.round:
        self._next += 1
      batch = self._order[start:self._next]
      by_client: dict[int, list[int]] = {}
      for e in batch:
        by_client.setdefault(int(self.client_of_example[e]), []).append(
            int(e))
      for c in sorted(by_client):
        self._arrive(c, by_client[c], self.round)

  def held_assignment(self) -> np.ndarray:
    """int64[N]: the client holding each example now, or -1."""
    out = np.full(len(self.client_of_example), -1, np.int64)
    for c, held in enumerate(self.held):
      out[held] = c
    return out

  def federated_data(self, arrays: Mapping[str, np.ndarray]
                     ) -> FederatedData:
    """The held examples as FederatedData over all `num_clients` clients
    (clients holding nothing have size 0)."""
    a = self.held_assignment()
    rows = np.flatnonzero(a >= 0)
    return FederatedData.from_assignment(
        {k: np.asarray(v)[rows] for k, v in arrays.items()}, a[rows],
        self.num_clients)

  def state_dict(self) -> dict:
    return {"round": self.round, "next": self._next,
            "held": [list(h) for h in self.held],
            "seen": self.seen.tolist()}

  def load_state_dict(self, state: dict) -> None:
    self.round, self._next = int(state["round"]), int(state["next"])
    self.held = [list(map(int, h)) for h in state["held"]]
    self.seen = np.asarray(state["seen"], np.int64)
