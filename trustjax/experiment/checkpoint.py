"""Orbax checkpoints of a training state pytree plus a JSON side record.

For a bit-identical resume a launch script checkpoints everything its next
step depends on: params, optimizer state (which carries the DP noise key),
the step, and host-side state (sampler, accountant) in `extra`. Per-step RNG
keys are derived as `fold_in(key(seed), step)`, so they need no state.
Typed PRNG keys in the state are stored as their raw key data and re-wrapped
on restore.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype,
                                                       jax.dtypes.prng_key)


def _unwrap_keys(tree):
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x,
                      tree)


def _rewrap_keys(restored, template):
  return jax.tree.map(
      lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t))
      if _is_key(t) else r, restored, template)


class CheckpointError(ValueError):
  """A checkpoint exists but cannot be used; nothing was deleted."""


class Checkpointer:
  """Saves every `every_steps` steps (and when forced); restores the latest.

  Checkpoints live in `workdir/checkpoints/<step>/` (orbax
  CheckpointManager); saves are waited for before returning, so a kill right
  after `maybe_save` loses nothing.
  """

  def __init__(self, workdir: str, *, every_steps: int, max_to_keep: int = 2):
    import orbax.checkpoint as ocp
    if every_steps <= 0:
      raise ValueError(f"every_steps={every_steps} must be positive")
    self._ocp = ocp
    self.directory = os.path.abspath(os.path.join(workdir, "checkpoints"))
    self.every_steps = every_steps
    self._mgr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(max_to_keep=max_to_keep,
                                             create=True,
                                             enable_async_checkpointing=False),
        item_names=("state", "extra"))

  def maybe_save(self, step: int, state: Any, extra: dict,
                 force: bool = False) -> bool:
    if not force and step % self.every_steps:
      return False
    if step in self._mgr.all_steps():
      return False
    ocp = self._ocp
    self._mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_unwrap_keys(state)),
        extra=ocp.args.JsonSave(extra)), force=True)
    self._mgr.wait_until_finished()
    return True

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def restore_latest(self, template: Any):
    """(step, state, extra) of the latest checkpoint, or None when none.

    Raises:
      CheckpointError: the checkpoint is unreadable or does not match the
        template (e.g. the model changed); nothing is deleted.
    """
    step = self._mgr.latest_step()
    if step is None:
      return None
    ocp = self._ocp
    abstract = jax.tree.map(
        lambda x: np.zeros(x.shape, x.dtype) if hasattr(x, "shape") else x,
        _unwrap_keys(template))
    path = os.path.join(self.directory, str(step))
    try:
      restored = self._mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          extra=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; report one clear error
      raise CheckpointError(
          f"cannot restore checkpoint {path}: {type(e).__name__}: "
          f"{str(e)[:500]}\nThe files were left untouched. Delete that step "
          "directory to resume from an earlier one, or pass --overwrite to "
          "start afresh.") from e
    state = restored["state"]
    flat_t, _ = jax.tree.flatten(abstract)
    flat_r, _ = jax.tree.flatten(state)
    for t, r in zip(flat_t, flat_r):
      if hasattr(t, "shape") and tuple(np.shape(r)) != tuple(t.shape):
        raise CheckpointError(
            f"checkpoint {path} holds an array of shape {np.shape(r)} where "
            f"the model now has {t.shape}: the run's config changed. Use "
            "another workdir or --overwrite.")
    state = jax.tree.map(lambda r, t: jax.numpy.asarray(r, dtype=t.dtype),
                         state, abstract)
    return step, _rewrap_keys(state, template), dict(restored["extra"])

  def close(self) -> None:
    self._mgr.close()
