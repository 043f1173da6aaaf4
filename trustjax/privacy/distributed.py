"""Data-parallel clipped gradients over a device mesh, one host or many.

Each device clips its own slice of the batch (per-example clipping is
independent across examples, so no communication is needed before the sum),
then the clipped sums are `psum`med: the result is the same SUM as on one
device, with the same sensitivity C. Noise is NOT added here: add it once to
the replicated sum with `gaussian_noise` (noise drawn per device and summed
would be a different, larger-variance mechanism than the one accounted, and
per-device noise of std sigma*C/sqrt(D) relies on devices not colluding).
Under `jit` the replicated sum and the replicated noise key give every device
(and every host) the same noise draw: one Gaussian mechanism per step.

Many hosts (multi-controller JAX, after `jax.distributed.initialize`; see
`trustjax.experiment.multihost`): every process runs the same program over a
mesh of ALL devices (`jax.make_mesh((jax.device_count(),), ("data",))`).
Host-side sampling (`PoissonSampler`) is a function of (seed, step), so
every process draws the same global indices; each process then reads only
the rows its own devices hold (`process_rows`) and assembles the global
batch with `shard_process_local`, without sending examples between hosts.
`shard_global` places a value every process holds in full (parameters and
optimizer state before the first step: then the jitted step sees the same
input layout at every step and compiles once); `to_host` brings a sharded result (per-example norms,
metrics) back as numpy on every process. Placement moves no data between
hosts; `to_host`, like every jitted computation over the mesh, is collective:
every process must call it, in the same order.
"""

from __future__ import annotations

from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from trustjax.privacy.clipping import ClipStats


def make_dp_grad_fn(clipped_grad_fn: Callable, mesh: jax.sharding.Mesh,
                    axis: str = "data") -> Callable:
  """Shards `clipped_grad_fn` over the batch axis of `mesh[axis]`.

  Args:
    clipped_grad_fn: from `clipped_grad(...)` (must accept `index_offset=`).
    mesh: a mesh (e.g. `jax.make_mesh((8,), ("data",))`).
    axis: the mesh axis to shard examples over.

  Returns:
    `fn(params, batch, mask=None, rng=None) -> (grad_sum, ClipStats)` with the
    same contract as `clipped_grad_fn` on the full batch: `grad_sum` (psum of
    the per-device clipped sums) is replicated; per-example stats
    (`per_example_norms`, `per_layer_norms`, `aux`) are sharded along
    `axis` in the original row order; counts are global. Device d handles rows
    `[d*B/D, (d+1)*B/D)` with per-example rngs `fold_in(rng, global_row)`, so
    results match the single-device call up to summation order. B must be
    divisible by the axis size D.

  Every clipping method works per device, including ghost / book-keeping
  clipping (`method="ghost"` or `"auto"`: the norms and sums are those of
  the device's own rows, equal to one device's to float rounding). A loss
  that uses its rng (dropout) on the ghost path draws from
  `fold_in(rng, first_row_of_the_device)` per device instead of one rng for
  the whole batch, so its randomness depends on the number of devices.

  Inputs may be host arrays (the same full value on every process; each
  device's slice is cut on its own host) or global jax.Arrays already laid
  out over `mesh` (from `shard_process_local`: each host loaded its rows).
  On many hosts the stats spanning processes are read with `to_host`.

  Example (one process or many; see `trustjax.experiment.multihost`), with
  `idx, mask = sampler.batch(step)` the same on every process:

    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    fn = make_dp_grad_fn(clipped_grad(loss_fn, 1.0), mesh)
    rows = process_rows(len(idx), mesh)           # this host's rows only
    batch = shard_process_local(load_examples(idx[rows]), mesh)
    grad_sum, stats = jax.jit(fn)(params, batch,
                                  shard_process_local(mask[rows], mesh), rng)
  """
  if axis not in mesh.shape:
    raise ValueError(f"axis={axis!r} is not a mesh axis; mesh axes are "
                     f"{tuple(mesh.shape)}")
  num_devices = mesh.shape[axis]

  def local(params, batch, mask, rng):
    # Mark the replicated params as device-varying: otherwise the transpose of
    # shard_map's implicit invariant->varying cast would psum every
    # per-example gradient over devices inside jax.grad (mixing examples).
    params = jax.tree.map(lambda x: jax.lax.pcast(x, axis, to="varying"),
                          params)
    offset = jax.lax.axis_index(axis) * mask.shape[0]
    g, st = clipped_grad_fn(params, batch, mask, rng, index_offset=offset)
    g = jax.lax.psum(g, axis)
    num_real = jax.lax.psum(st.num_real, axis)
    num_clipped = jax.lax.psum(
        jnp.round(st.frac_clipped * st.num_real.astype(jnp.float32)), axis)
    stats = st._replace(
        num_real=num_real,
        frac_clipped=num_clipped / jnp.maximum(num_real, 1).astype(
            jnp.float32),
        num_nonfinite=jax.lax.psum(st.num_nonfinite, axis))
    return g, stats

  stats_spec = ClipStats(per_example_norms=P(axis), num_real=P(),
                         frac_clipped=P(), aux=P(axis), num_nonfinite=P(),
                         per_layer_norms=P(axis))
  sharded = jax.shard_map(local, mesh=mesh,
                          in_specs=(P(), P(axis), P(axis), P()),
                          out_specs=(P(), stats_spec))

  def fn(params, batch, mask=None, rng=None):
    leaves = jax.tree.leaves(batch)
    if not leaves:
      raise ValueError("batch has no array leaves")
    b = leaves[0].shape[0]
    if b % num_devices:
      raise ValueError(f"batch size B={b} must be divisible by the number of "
                       f"devices on mesh axis {axis!r} ({num_devices})")
    if mask is None:
      mask = np.ones((b,), bool)
    elif not isinstance(mask, jax.Array):
      mask = np.asarray(mask).astype(bool)
    elif mask.dtype != jnp.bool_:
      mask = mask.astype(bool)
    # Explicit-axis meshes (the default) need inputs laid out as in_specs say;
    # host values are sliced per device, jax.Arrays resharded (on many hosts
    # they must already be global arrays over this mesh's devices).
    params, rng = shard_global(params, mesh, P()), shard_global(rng, mesh, P())
    batch = shard_global(batch, mesh, P(axis))
    mask = shard_global(mask, mesh, P(axis))
    return sharded(params, batch, mask, rng)

  fn.sensitivity = getattr(clipped_grad_fn, "sensitivity", None)
  fn.l2_clip = getattr(clipped_grad_fn, "l2_clip", None)
  return fn


def process_rows(num_rows: int, mesh: jax.sharding.Mesh,
                 axis: str = "data") -> np.ndarray:
  """Rows of a `[num_rows, ...]` array sharded over `mesh[axis]` that THIS
  process's devices hold.

  Returns int64[r], sorted and unique: the rows a process must load for
  `shard_process_local`. On one process this is `arange(num_rows)`; on P
  processes with the mesh's devices in process order, a contiguous block of
  `num_rows / P` rows. `num_rows` must be divisible by the axis size.
  """
  if axis not in mesh.shape:
    raise ValueError(f"axis={axis!r} is not a mesh axis; mesh axes are "
                     f"{tuple(mesh.shape)}")
  if num_rows % mesh.shape[axis]:
    raise ValueError(f"num_rows={num_rows} must be divisible by the number "
                     f"of devices on mesh axis {axis!r} ({mesh.shape[axis]})")
  sharding = NamedSharding(mesh, P(axis))
  rows = np.zeros(num_rows, bool)
  for idx in sharding.addressable_devices_indices_map((num_rows,)).values():
    rows[idx[0]] = True
  return np.flatnonzero(rows).astype(np.int64)


def shard_process_local(tree: Any, mesh: jax.sharding.Mesh,
                        axis: str = "data") -> Any:
  """This process's rows -> global arrays sharded over `mesh[axis]`.

  Every leaf of `tree` holds, along its leading axis, exactly the rows
  `process_rows(B, mesh, axis)` of the global `[B, ...]` array, in that
  order (B = local rows * number of processes sharing the axis). No data
  moves between processes. On one process this is `device_put`.
  """
  sharding = NamedSharding(mesh, P(axis))
  return jax.tree.map(
      lambda x: jax.make_array_from_process_local_data(sharding,
                                                       np.asarray(x)), tree)


def _is_key(x) -> bool:
  return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype,
                                                        jax.dtypes.prng_key)


def shard_global(tree: Any, mesh: jax.sharding.Mesh, spec: P = P()) -> Any:
  """Places a pytree as global arrays laid out as `spec` over `mesh`.

  Host values (numpy, Python scalars, arrays of this process's devices):
  every process must pass the SAME full value; each reads only the slices of
  its own devices (no communication; the equality is not checked, which
  would all-gather the value). jax.Arrays already laid out as `spec` over
  `mesh` are returned as they are; other jax.Arrays on many hosts must be
  global arrays over the mesh's devices (then they are resharded).
  `jax.random` key arrays keep their key type.
  """
  sharding = NamedSharding(mesh, spec)

  def put(x):
    if x is None:
      return x
    if isinstance(x, jax.core.Tracer):   # under jit: a sharding constraint
      return jax.reshard(x, sharding)
    if isinstance(x, jax.Array) and x.sharding.is_equivalent_to(
        sharding, x.ndim):
      return x
    if jax.process_count() == 1 or (isinstance(x, jax.Array)
                                    and not x.is_fully_addressable):
      return jax.reshard(x, sharding)
    if _is_key(x):
      impl = jax.random.key_impl(x)
      data = shard_global(jax.random.key_data(x), mesh, spec)
      return jax.random.wrap_key_data(data, impl=impl)
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda idx: host[idx])

  return jax.tree.map(put, tree, is_leaf=_is_key)


def to_host(tree: Any) -> Any:
  """Global (possibly multi-process) arrays -> numpy with the full value.

  Arrays that span several processes are all-gathered (every process must
  call this, in the same order); fully addressable ones are copied.
  """
  from jax.experimental import multihost_utils

  def get(x):
    if isinstance(x, jax.Array) and not x.is_fully_addressable:
      if x.sharding.is_fully_replicated:
        return np.asarray(x.addressable_data(0))
      return np.asarray(multihost_utils.process_allgather(x, tiled=True))
    return np.asarray(x)

  return jax.tree.map(get, tree)
