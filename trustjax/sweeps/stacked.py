"""K models side by side: one jitted program, `vmap` over a leading model axis.

A sweep over seeds, learning rates, clip norms, noise multipliers or training
subsets (shadow models for membership inference) trains K models of the same
architecture. Run one after another they pay K times the dispatch, tracing and
small-kernel overheads; stacked, each step is one call of
`jit(vmap(step_fn))` over arrays with a leading `[K, ...]` model axis:
parameters, optimizer state, hyperparameters, batches, row masks and RNG keys.

Contract of `step_fn(state, hparams, batch, row_mask, key) -> (state, metrics)`:
a pure single-model step (the one a separate run would jit). Under `vmap`
model k sees exactly its own slice of every argument, so model k's result is
the one of a separate run given the same inputs, up to float reassociation
inside XLA's batched kernels (tests hold it to 1e-5). Nothing is shared
between models: each has its own data order, noise key and, for DP-SGD, its
own accountant on the host.

With several devices the model axis is sharded over a `("models",)` mesh
(K must divide evenly); per-model math is independent, so sharding does not
change results, only where they run.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

AXIS = "models"


def stack(trees: Sequence[Any]) -> Any:
  """Stacks K pytrees of identical structure into one with leading axis K.

  Raises ValueError naming the first leaf whose shape or dtype differs (such
  models cannot share one program).
  """
  if not trees:
    raise ValueError("stack() needs at least one pytree; got none")
  ref_leaves, ref_def = jax.tree.flatten(trees[0])
  for k, t in enumerate(trees[1:], 1):
    leaves, tdef = jax.tree.flatten(t)
    if tdef != ref_def:
      raise ValueError(f"model {k} has a different pytree structure than "
                       f"model 0: {tdef} vs {ref_def}")
    for i, (a, b) in enumerate(zip(ref_leaves, leaves)):
      if jnp.shape(a) != jnp.shape(b) or jnp.result_type(a) != \
          jnp.result_type(b):
        path = jax.tree_util.keystr(
            jax.tree_util.tree_flatten_with_path(trees[0])[0][i][0])
        raise ValueError(
            f"model {k} leaf {path} has shape/dtype {jnp.shape(b)} "
            f"{jnp.result_type(b)}, model 0 has {jnp.shape(a)} "
            f"{jnp.result_type(a)}: models with different shapes cannot be "
            "stacked")

  def _stack(*xs):
    if isinstance(xs[0], jax.Array) and jnp.issubdtype(
        xs[0].dtype, jax.dtypes.prng_key):
      return jnp.stack(xs)
    if all(isinstance(x, np.ndarray) or np.isscalar(x) for x in xs):
      return np.stack([np.asarray(x) for x in xs])
    return jnp.stack([jnp.asarray(x) for x in xs])
  return jax.tree.map(_stack, *trees)


def unstack(tree: Any) -> list:
  """Inverse of `stack`: the K single-model pytrees (as device arrays)."""
  k = num_models(tree)
  return [jax.tree.map(lambda x, i=i: x[i], tree) for i in range(k)]


def num_models(tree: Any) -> int:
  """The size K of the leading model axis; ValueError if leaves disagree."""
  sizes = {int(jnp.shape(x)[0]) for x in jax.tree.leaves(tree)
           if jnp.ndim(x) > 0}
  if len(sizes) != 1:
    raise ValueError(f"leaves disagree on the model axis size: {sorted(sizes)}")
  return sizes.pop()


def model_mesh(num_models_: int, num_devices: int | None = None):
  """A `("models",)` mesh over `num_devices` devices, or None for one device.

  `num_devices=None` uses every local device when the backend is an
  accelerator and one device on CPU (simulated CPU devices share the same
  cores, so splitting the model axis over them buys nothing). K must be a
  multiple of the device count.
  """
  if num_devices is None:
    num_devices = (jax.local_device_count()
                   if jax.default_backend() != "cpu" else 1)
  if num_devices <= 1:
    return None
  if num_devices > jax.device_count():
    raise ValueError(f"num_devices={num_devices} but only "
                     f"{jax.device_count()} devices are visible")
  if num_models_ % num_devices:
    raise ValueError(f"{num_models_} stacked models do not split evenly over "
                     f"{num_devices} devices; use a multiple of {num_devices} "
                     "models or fewer devices")
  return jax.make_mesh((num_devices,), (AXIS,),
                       devices=jax.devices()[:num_devices])


def shard_models(tree: Any, mesh) -> Any:
  """Places a `[K, ...]` pytree with K split over the mesh's model axis."""
  if mesh is None:
    return tree
  sharding = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(AXIS))
  return jax.device_put(tree, sharding)


def stacked_step(step_fn: Callable, *, donate: bool = True,
                 chunk_size: int | None = None) -> Callable:
  """`jit(vmap(step_fn))`: every argument and output carries the model axis.

  With `chunk_size`, `jit(lax.map(step_fn, batch_size=chunk_size))`: the
  models run `chunk_size` at a time (vmapped within a chunk, one chunk after
  another inside the same program; 1: a scan over models, each with the
  single-model kernels). Same results; it pays when vmapped kernels cost
  more per model than single ones (e.g. per-example clipping of K models,
  or K optimizer states that leave the cache; benchmarks/stacked_step.py).
  """
  if chunk_size is None:
    fn = jax.vmap(step_fn)
  else:
    if int(chunk_size) < 1:
      raise ValueError(f"chunk_size={chunk_size} must be a positive int "
                       "(or None: vmap all models at once)")

    def fn(*args):
      return jax.lax.map(lambda a: step_fn(*a), args,
                         batch_size=int(chunk_size))
  return jax.jit(fn, donate_argnums=(0,) if donate else ())


def vmap_train(step_fn: Callable, states: Sequence[Any] | Any,
               hparams: Sequence[Mapping[str, Any]] | Mapping[str, Any],
               data: Mapping[str, np.ndarray],
               batch_indices: Callable[[int, int], tuple[np.ndarray,
                                                         np.ndarray]],
               num_steps: int, *, seeds: Sequence[int],
               start_step: int = 0,
               on_step: Callable[[int, Any, Any], None] | None = None,
               num_devices: int | None = None,
               data_masks: np.ndarray | None = None,
               chunk_size: int | None = None) -> Any:
  """Trains K models side by side; returns the stacked final state `[K,...]`.

  Args:
    step_fn: pure single-model step `(state, hparams, batch, row_mask, key)
      -> (state, metrics)`; `batch` is a dict of `[B, ...]` arrays gathered
      from `data`, `row_mask` bool[B] marks real rows, `key` is the step key
      `fold_in(key(seeds[k]), step)`.
    states: K single-model states (stacked here), or an already stacked one.
    hparams: K dicts of scalars (e.g. learning rate, clip norm, noise
      multiplier), or one dict of `[K]` arrays; traced, so models may differ.
    data: the shared training arrays `{name: [N, ...]}`.
    batch_indices: `(k, step) -> (idx int[B], row_mask bool[B])`: model k's
      batch at `step` as indices into ITS training set (the rows of
      `data_masks[k]` when given, all N rows otherwise). B is the same for
      every model (pad with row_mask False).
    num_steps: train steps `start_step, ..., num_steps - 1`.
    seeds: one int per model for the step keys.
    on_step: called after every step as `on_step(step + 1, state, metrics)`
      with the stacked state and `[K]` metrics (logging, checkpoints).
    num_devices: shard the model axis over this many devices (see
      `model_mesh`).
    data_masks: bool[K, N], model k trains on the rows where it is True (each
      example IN for some models and OUT for others: shadow models).
    chunk_size: run the models `chunk_size` at a time (`stacked_step`); one
      device only.

  Returns:
    The stacked state after `num_steps` steps.
  """
  if not isinstance(states, (list, tuple)):
    stacked = states
  else:
    stacked = stack(list(states))
  k = num_models(stacked)
  if len(seeds) != k:
    raise ValueError(f"seeds has {len(seeds)} entries for {k} models")
  if isinstance(hparams, (list, tuple)):
    if len(hparams) != k:
      raise ValueError(f"hparams has {len(hparams)} entries for {k} models")
    hp = {name: np.asarray([h[name] for h in hparams], np.float32)
          for name in hparams[0]}
  else:
    hp = {name: np.asarray(v, np.float32) for name, v in hparams.items()}
  n = len(next(iter(data.values())))
  rows = [np.arange(n)] * k
  if data_masks is not None:
    data_masks = np.asarray(data_masks)
    if data_masks.dtype != bool or data_masks.shape != (k, n):
      raise ValueError(f"data_masks must be bool[{k}, {n}]; got "
                       f"{data_masks.dtype}{list(data_masks.shape)}")
    rows = [np.flatnonzero(m) for m in data_masks]
    empty = [i for i, r in enumerate(rows) if len(r) == 0]
    if empty:
      raise ValueError(f"models {empty} have no training example in "
                       "data_masks")
  mesh = model_mesh(k, num_devices)
  if mesh is not None and chunk_size is not None:
    raise ValueError(f"chunk_size={chunk_size} with the model axis sharded "
                     f"over {num_devices} devices: chunking is for one device")
  stacked = shard_models(stacked, mesh)
  hp = shard_models(hp, mesh)
  step = stacked_step(step_fn, chunk_size=chunk_size)
  base = jnp.stack([jax.random.key(int(s)) for s in seeds])
  # One dispatch per step for the K step keys, not K.
  step_keys = jax.jit(jax.vmap(jax.random.fold_in, in_axes=(0, None)))
  for t in range(start_step, num_steps):
    batch, row_mask = gather_models(data, rows, batch_indices, t)
    keys = step_keys(base, t)
    stacked, metrics = step(stacked, hp, shard_models(batch, mesh),
                            shard_models(row_mask, mesh),
                            shard_models(keys, mesh))
    if on_step is not None:
      on_step(t + 1, stacked, metrics)
  return stacked


def gather_models(data: Mapping[str, np.ndarray], rows: Sequence[np.ndarray],
                  batch_indices: Callable, step: int
                  ) -> tuple[dict[str, np.ndarray], np.ndarray]:
  """Model-stacked batch `{name: [K, B, ...]}` and row mask bool[K, B].

  Model k's local indices are mapped through `rows[k]` (its training subset);
  padding rows are zero and masked out.
  """
  idxs, masks = [], []
  for k, r in enumerate(rows):
    idx, m = batch_indices(k, step)
    idx = np.asarray(idx)
    m = np.asarray(m, bool)
    glob = np.where(m, r[np.where(m, idx, 0)], 0)
    idxs.append(glob)
    masks.append(m)
  b = {len(i) for i in idxs}
  if len(b) != 1:
    raise ValueError(f"models returned batches of different sizes {sorted(b)} "
                     "at step {step}; pad them to one size")
  idx = np.stack(idxs)
  mask = np.stack(masks)
  batch = {}
  for name, arr in data.items():
    g = arr[idx]
    g[~mask] = 0
    batch[name] = g
  return batch, mask
