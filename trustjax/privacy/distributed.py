"""Data-parallel clipped gradients over a device mesh (`jax.shard_map`).

Each device clips its own slice of the batch (per-example clipping is
independent across examples, so no communication is needed before the sum),
then the clipped sums are `psum`med: the result is the same SUM as on one
device, with the same sensitivity C. Noise is NOT added here: add it once to
the replicated sum with `gaussian_noise` (noise drawn per device and summed
would be a different, larger-variance mechanism than the one accounted, and
per-device noise of std sigma*C/sqrt(D) relies on devices not colluding).
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
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
      mask = jnp.ones((b,), bool)
    mask = jnp.asarray(mask).astype(bool)
    # Explicit-axis meshes (the default) need inputs laid out as in_specs say.
    put = lambda tree, spec: jax.tree.map(
        lambda x: jax.reshard(x, NamedSharding(mesh, spec)), tree)
    params, rng = put(params, P()), put(rng, P())
    batch, mask = put(batch, P(axis)), put(mask, P(axis))
    return sharded(params, batch, mask, rng)

  fn.sensitivity = getattr(clipped_grad_fn, "sensitivity", None)
  fn.l2_clip = getattr(clipped_grad_fn, "l2_clip", None)
  return fn
