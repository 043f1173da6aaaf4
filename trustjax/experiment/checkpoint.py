"""Orbax checkpoints of a training-state pytree plus a JSON side record.

Exact resume. A run restarted from a checkpoint reproduces the uninterrupted
run bit for bit only if the checkpoint holds everything the next step reads:

- `state` (arrays, restored into the caller's template): params, the
  optimizer state (optax NamedTuples; for DP-SGD it also carries the noise
  key), any other model state (batch statistics), and RNG keys that are
  *carried* from step to step. Keys derived as `fold_in(key(seed), step)`
  need no saving. Typed keys (`jax.random.key`) and raw `uint32` keys are
  both accepted: typed keys are stored as `jax.random.key_data` and
  re-wrapped with the template key's implementation on restore.
- `extra` (JSON): the step counter and host-side state: the Poisson
  sampler's / data iterator's position and seed, the accountant's history
  (or the step count it is a function of), early-stopping counters, and the
  privacy parameters the run was started with (to refuse a changed config).
- Metrics logged after the checkpoint are logged again by the resumed run:
  open `MetricWriter(workdir, resume_step=step)` so they are not duplicated.

Saves are synchronous (the call returns once the checkpoint is committed),
so a kill right after `maybe_save` loses nothing; orbax writes into a
temporary directory and renames it, so a kill during a save leaves the
previous checkpoints intact.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np

CHECKPOINT_DIR = "checkpoints"


class CheckpointError(ValueError):
  """A checkpoint exists but cannot be used; nothing was deleted."""


def _is_key(x: Any) -> bool:
  return isinstance(x, jax.Array) and jax.dtypes.issubdtype(
      x.dtype, jax.dtypes.prng_key)


def _unwrap_keys(tree: Any) -> Any:
  return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x,
                      tree)


def _abstract(x: Any) -> Any:
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  if isinstance(x, np.ndarray):
    return x  # restored as a numpy array of this shape and dtype
  if isinstance(x, (np.generic, int, float, bool)):
    return np.asarray(x)
  return x


def _json_safe(obj: Any, where: str) -> Any:
  if isinstance(obj, dict):
    return {str(k): _json_safe(v, f"{where}.{k}") for k, v in obj.items()}
  if isinstance(obj, (list, tuple)):
    return [_json_safe(v, f"{where}[{i}]") for i, v in enumerate(obj)]
  if isinstance(obj, (str, int, float, bool)) or obj is None:
    return obj
  if isinstance(obj, (np.ndarray, np.generic, jax.Array)):
    return np.asarray(obj).tolist()
  raise ValueError(f"extra{where} has type {type(obj).__name__}, which is "
                   "not JSON; store ints, floats, strings, lists or dicts")


def _leaf_name(path) -> str:
  parts = []
  for k in path:
    if isinstance(k, jax.tree_util.DictKey):
      parts.append(str(k.key))
    elif isinstance(k, jax.tree_util.GetAttrKey):
      parts.append(k.name)
    elif isinstance(k, jax.tree_util.SequenceKey):
      parts.append(str(k.idx))
    else:
      parts.append(str(getattr(k, "key", k)))
  return ".".join(parts)


def _shapes(tree: Any) -> dict[str, tuple]:
  flat, _ = jax.tree_util.tree_flatten_with_path(tree)
  return {_leaf_name(p): tuple(np.shape(x)) for p, x in flat}


class Checkpointer:
  """Saves every `every_steps` steps (and when forced); restores the latest.

  Layout: `workdir/checkpoints/<step>/{state,extra}` (orbax
  `CheckpointManager`, keeping the newest `max_to_keep` steps).
  """

  def __init__(self, workdir: str, *, every_steps: int, max_to_keep: int = 2):
    import orbax.checkpoint as ocp
    if every_steps <= 0:
      raise ValueError(f"every_steps={every_steps} must be a positive int")
    if max_to_keep is not None and max_to_keep <= 0:
      raise ValueError(f"max_to_keep={max_to_keep} must be positive or None "
                       "(keep all)")
    self._ocp = ocp
    self.directory = os.path.abspath(os.path.join(workdir, CHECKPOINT_DIR))
    self.every_steps = int(every_steps)
    self._mgr = ocp.CheckpointManager(
        self.directory,
        options=ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True,
            enable_async_checkpointing=False),
        item_names=("state", "extra"))

  def all_steps(self) -> list[int]:
    """Steps with a committed checkpoint, ascending."""
    return sorted(self._mgr.all_steps())

  def latest_step(self) -> int | None:
    return self._mgr.latest_step()

  def should_save(self, step: int) -> bool:
    """Whether `maybe_save(step, ...)` (unforced) would write a checkpoint."""
    return int(step) % self.every_steps == 0

  def maybe_save(self, step: int, state: Any, extra: dict | None = None,
                 force: bool = False) -> bool:
    """Saves `(state, extra)` as `step` if `step % every_steps == 0` or
    `force`; returns whether it saved. A step already saved is not
    rewritten. Returns only after the checkpoint is committed to disk.

    Raises:
      ValueError: `extra` is not JSON-serialisable (names the key).
    """
    step = int(step)
    if not force and step % self.every_steps:
      return False
    if step in self._mgr.all_steps():
      return False
    ocp = self._ocp
    extra = _json_safe(dict(extra or {}), "")
    self._mgr.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave(_unwrap_keys(state)),
        extra=ocp.args.JsonSave(extra)), force=True)
    self._mgr.wait_until_finished()
    return True

  def restore_latest(self, template: Any
                     ) -> tuple[int, Any, dict] | None:
    """`(step, state, extra)` of the newest checkpoint, or None when none.

    `state` has the template's tree structure, dtypes, shardings and key
    types (jax arrays where the template has jax arrays, numpy arrays where
    it has numpy arrays); the template's values are not used.

    Raises:
      CheckpointError: the checkpoint does not match the template (a leaf's
        shape, or the set of leaves, differs: the model or optimizer
        changed), or it cannot be read (corrupt or truncated files). The
        message names the checkpoint directory and the fixes; nothing is
        deleted.
    """
    step = self._mgr.latest_step()
    if step is None:
      return None
    ocp = self._ocp
    plain = _unwrap_keys(template)
    abstract = jax.tree.map(_abstract, plain)
    path = os.path.join(self.directory, str(step))
    try:
      restored = self._mgr.restore(step, args=ocp.args.Composite(
          state=ocp.args.StandardRestore(abstract),
          extra=ocp.args.JsonRestore()))
    except Exception as e:  # orbax raises many types; report one clear one
      mismatch = self._mismatch(step, plain)
      if mismatch:
        raise CheckpointError(
            f"checkpoint {path} does not match the current training state "
            "(the model, optimizer or their config changed):\n  "
            + "\n  ".join(mismatch) + "\nUse another --workdir, or pass "
            "--overwrite to start afresh (deletes the old run).") from e
      raise CheckpointError(
          f"cannot read checkpoint {path} ({type(e).__name__}: "
          f"{str(e)[:400]}). The files were left untouched. Delete that step "
          "directory to resume from an earlier checkpoint, or pass "
          "--overwrite to start afresh.") from e
    state, extra = restored["state"], restored["extra"]
    if not isinstance(extra, dict):
      raise CheckpointError(f"checkpoint {path}: extra item is "
                            f"{type(extra).__name__}, expected a JSON object")
    got, want = _shapes(state), _shapes(plain)
    if jax.tree.structure(state) != jax.tree.structure(plain) or got != want:
      raise CheckpointError(
          f"checkpoint {path} restored into a different structure than the "
          f"template: {sorted(set(got.items()) ^ set(want.items()))[:10]}")
    state = jax.tree.map(
        lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t))
        if _is_key(t) else r, state, template)
    return step, state, dict(extra)

  def _mismatch(self, step: int, plain: Any) -> list[str]:
    """Differences between the saved tree and the template (best effort)."""
    try:
      meta = self._mgr.item_metadata(step)["state"]
      tree = getattr(meta, "tree", meta)
      saved = {}
      for p, m in jax.tree_util.tree_flatten_with_path(tree)[0]:
        if hasattr(m, "shape"):
          saved[getattr(m, "name", None) or _leaf_name(p)] = tuple(m.shape)
    except Exception:  # unreadable metadata: report as corrupt instead
      return []
    if not saved:  # e.g. another item is corrupt and hides this one
      return []
    want = {k: v for k, v in _shapes(plain).items()}
    out = []
    for k in sorted(set(saved) | set(want)):
      if k not in saved:
        out.append(f"{k}: not in the checkpoint (template shape {want[k]})")
      elif k not in want:
        out.append(f"{k}: in the checkpoint (shape {saved[k]}) but not in "
                   "the template")
      elif saved[k] != want[k]:
        out.append(f"{k}: checkpoint shape {saved[k]}, template shape "
                   f"{want[k]}")
    return out[:20] + ([f"... and {len(out) - 20} more"] if len(out) > 20
                       else [])

  def close(self) -> None:
    self._mgr.close()

  def __enter__(self) -> "Checkpointer":
    return self

  def __exit__(self, *exc) -> None:
    self.close()
