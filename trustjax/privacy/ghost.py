"""Ghost / book-keeping DP-SGD clipping: per-example norms without vmap.

For a dense layer `y = a W` the per-example gradient is `a_i^T g_i` with `a_i`
the layer input and `g_i = dL_i/dy_i` the output gradient of example i, so its
norm needs no per-example weight gradient: for sequence inputs
`||a_i^T g_i||_F^2 = sum_{t,t'} (a_t . a_t') (g_t . g_t')` (ghost norm, Li et
al. 2022, "Large Language Models Can Be Strong Differentially Private
Learners"; Goodfellow 2015 for T = 1), or the per-example matrix is formed
directly when that is cheaper. The clipped sum `sum_i w_i a_i^T g_i`, with
`w_i = mask_i min(1, C / ||grad_i||)`, is then one weighted contraction
(book-keeping, Bu et al. 2023, "Differentially Private Optimization on Large
Model at Small Cost"). Total cost: one forward and one backward pass without
weight gradients, plus the contractions.

The model is not rewritten: `loss_fn` is traced to a jaxpr, in which dense
layers (any `dot_general` of a batched input with a parameter), embedding
lookups (`gather` rows of a parameter) and parameters broadcast over the batch
in elementwise ops (biases, LayerNorm scale and bias) are recognised. All
other parameters (convolutions, weights used twice such as tied embeddings,
weights transformed before use, ...) fall back to `vmap(grad)` for those
parameters only, and their squared norms are added in. See `_ghost_trace.py`.

Batch locality is checked on the jaxpr: the per-example loss must provably
depend on its own row only. Batch statistics (BatchNorm), reductions over the
batch axis, and primitives the analysis does not know (`scan`, `while`,
`cond`, scatter, `W @ x` with the parameter on the left, ...) make
`ghost_clipped_grad` raise ValueError at trace time (clipping.clipped_grad
with method="auto" then uses vmap). If the loss uses its rng (dropout) and
some parameter needs the vmap fallback, every parameter falls back to vmap
(with a warning) so all per-example gradients come from one consistent trace.

Inside `jax.shard_map` (data-parallel clipping, `distributed.make_dp_grad_fn`)
every device clips its own rows. The zero perturbations, the fallback
parameters and the parameter views the per-example products are mapped back
through are cast to device-varying along the mesh axes the inputs vary on
(`_vary`): differentiating with respect to a device-invariant value would
transpose shard_map's implicit invariant->varying cast into a `psum`,
summing the output gradients of the examples at the same row of every
device. `shard_map`'s own casts (`pvary`) in the traced loss are transparent
to the analysis.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax
import jax.extend.core as jcore
import numpy as np

from trustjax.privacy import _ghost_trace as gt


class GhostStats(NamedTuple):
  """Statistics of one ghost-clipped batch.

  Attributes:
    per_example_norms: float32[B] L2 norm of each example's full gradient
      (before clipping); 0 for padded rows.
    num_real: int32[] number of rows with mask True.
    frac_clipped: float32[] fraction of real rows with norm > l2_clip.
    aux: the aux output of `loss_fn` (None when `has_aux=False`).
    num_nonfinite: int32[] real rows whose norm is not finite; they are
      dropped from the sum (weight 0).
    num_fallback_params: number of parameter leaves handled by vmap (0 is
      reported on the microbatched path).
  """
  per_example_norms: jax.Array
  num_real: jax.Array
  frac_clipped: jax.Array
  aux: Any
  num_nonfinite: jax.Array
  num_fallback_params: int = 0


def ghost_clipped_grad(
    loss_fn: Callable,
    l2_clip: float,
    *,
    has_aux: bool = True,
    microbatch_size: int | None = None,
    norm_strategy: str = "auto",
    compute_dtype: Any = None,
) -> Callable:
  """Sum of per-example clipped gradients by ghost norms and book-keeping.

  Args:
    loss_fn: `loss_fn(params, batch, rng) -> (per_example_loss[B], aux)` (or
      just `per_example_loss[B]` when `has_aux=False`); every leaf of `batch`
      has leading axis B. Example i's loss must depend only on example i.
    l2_clip: clip norm C > 0 applied to each example's whole gradient.
    has_aux: whether `loss_fn` returns `(loss, aux)`.
    microbatch_size: if set, the batch is processed in chunks of this size
      with `lax.scan` (B must be divisible by it); lowers peak memory. Chunk
      j is given `jax.random.fold_in(rng, j)` (when rng is not None), so a
      stochastic loss draws different randomness than the one-shot call.
    norm_strategy: "auto" (per dense layer: ghost Gram trick when
      `T (D_in + D_out) <= D_in D_out`, else per-example matrices), "gram" or
      "direct" (forced; for tests and benchmarks).
    compute_dtype: None (compute in the dtypes of params and batch), or a
      float dtype such as `jnp.bfloat16` for mixed precision: the loss is
      evaluated on params and floating batch leaves cast to it, so
      activations, layer inputs and output gradients are in that dtype,
      while everything that bounds the sensitivity is f32: the per-example
      norms are computed in f32 from those layer inputs and output gradients
      (upcast), the clip weights are f32, and the clipped sum
      `sum_i w_i a_i^T g_i` is contracted and accumulated in f32 from the
      SAME upcast values, then returned in the params' dtype (f32 master
      params give an f32 sum; the vmap fallback parameters differentiate
      through the cast, in f32). Hence each example's contribution has
      norm <= C up to f32 rounding, as in full precision; only the gradient
      itself is a bf16-accurate estimate (tests/privacy/
      test_privacy_ghost_mixed.py states the tolerances).

  Returns:
    `fn(params, batch, mask, rng) -> (grad_sum, GhostStats)`. `grad_sum` has the
    structure and dtypes of `params` and equals
    `sum_i mask_i * min(1, C / ||g_i||) * g_i` with `g_i` example i's gradient
    (a SUM, not a mean; noise and normalisation are applied elsewhere).
    Rows with a non-finite norm get weight 0.

  Raises:
    ValueError: (at trace time) if the model mixes examples across the batch
      axis, or uses an op the batch-locality analysis does not know.
  """
  traced = isinstance(l2_clip, jax.core.Tracer)
  if traced:
    # A traced scalar C (e.g. one clip norm per stacked model under vmap):
    # the norms do not depend on C, only the weights min(1, C / norm) do.
    if jnp.shape(l2_clip) != ():
      raise ValueError(f"a traced l2_clip must be a scalar for ghost "
                       f"clipping, got shape {jnp.shape(l2_clip)}")
  elif not isinstance(l2_clip, (int, float)) or isinstance(l2_clip, bool):
    raise ValueError(f"l2_clip must be a positive float for ghost clipping, "
                     f"got {l2_clip!r} (per-layer thresholds: method='vmap')")
  elif not l2_clip > 0:
    raise ValueError(f"l2_clip must be > 0, got {l2_clip}")
  if microbatch_size is not None and (not isinstance(microbatch_size, int) or
                                      microbatch_size < 1):
    raise ValueError(f"microbatch_size must be a positive int or None, got "
                     f"{microbatch_size!r}")
  if norm_strategy not in ("auto", "gram", "direct"):
    raise ValueError(f"norm_strategy must be 'auto', 'gram' or 'direct', got "
                     f"{norm_strategy!r}")

  if compute_dtype is not None and not jnp.issubdtype(compute_dtype,
                                                      jnp.floating):
    raise ValueError(f"compute_dtype must be None or a float dtype such as "
                     f"jnp.bfloat16, got {compute_dtype!r}")

  def loss_with_aux(params, batch, rng):
    if compute_dtype is not None:
      params, batch = cast_floats((params, batch), compute_dtype)
    out = loss_fn(params, batch, rng)
    return out if has_aux else (out, None)

  def chunk(params, batch, mask, rng):
    return _ghost_chunk(loss_with_aux, l2_clip if traced else float(l2_clip),
                        norm_strategy, params, batch, mask, rng)

  def fn(params, batch, mask, rng):
    b = _batch_size(batch)
    mask = jnp.ones((b,), bool) if mask is None else jnp.asarray(mask, bool)
    if mask.shape != (b,):
      raise ValueError(f"mask must have shape ({b},), got {mask.shape}")
    if microbatch_size is None or microbatch_size >= b:
      return chunk(params, batch, mask, rng)
    if b % microbatch_size:
      raise ValueError(f"batch size {b} is not divisible by microbatch_size="
                       f"{microbatch_size}")
    n = b // microbatch_size
    split = lambda x: x.reshape((n, microbatch_size) + x.shape[1:])
    xs = (jax.tree.map(split, batch), split(mask), jnp.arange(n))

    def body(acc, x):
      # Chunk j gets fold_in(rng, j) so stochastic layers (dropout) do not
      # repeat their masks across chunks.
      r = rng if rng is None else jax.random.fold_in(rng, x[2])
      g, st = chunk(params, x[0], x[1], r)
      acc = jax.tree.map(jnp.add, acc, g)
      return acc, (st.per_example_norms, st.aux, st.num_nonfinite)

    # Under shard_map the carry must have the chunks' sums' type: varying
    # along every mesh axis the inputs vary on.
    zeros = _vary(jax.tree.map(jnp.zeros_like, params),
                  gt.varying_axes((params, batch, mask, rng)))
    grad_sum, (norms, aux, nonfin) = lax.scan(body, zeros, xs)
    norms = norms.reshape(b)
    aux = jax.tree.map(
        lambda a: a.reshape((b,) + a.shape[2:])
        if a.ndim >= 2 and a.shape[1] == microbatch_size else a, aux)
    num_real = jnp.sum(mask.astype(jnp.int32))
    clipped = jnp.sum((mask & (norms > l2_clip)).astype(jnp.float32))
    stats = GhostStats(norms, num_real,
                       clipped / jnp.maximum(num_real, 1).astype(jnp.float32),
                       aux, jnp.sum(nonfin))
    return grad_sum, stats

  return fn


def _vary(tree: Any, axes: tuple) -> Any:
  """Casts every leaf of `tree` to device-varying along `axes` (no-op for
  axes along which a leaf already varies, and outside `shard_map`).

  Inside `shard_map`, differentiating with respect to a device-INVARIANT
  value whose uses are varying transposes the implicit invariant->varying
  cast into a `psum` over devices: the "per-example" output gradients of a
  zero perturbation would be summed over the examples at the same row of
  every device. Every value ghost clipping differentiates with respect to
  is therefore made varying along all the axes its inputs vary on.
  """
  if not axes:
    return tree
  return jax.tree.map(lambda x: gt.pvary_missing(x, axes), tree)


def cast_floats(tree: Any, dtype: Any) -> Any:
  """Casts the floating leaves of `tree` to `dtype`; others unchanged."""
  return jax.tree.map(
      lambda x: x.astype(dtype) if jnp.issubdtype(jnp.result_type(x),
                                                  jnp.floating) else x, tree)


def _batch_size(batch) -> int:
  leaves = jax.tree.leaves(batch)
  if not leaves:
    raise ValueError("batch has no array leaves")
  shapes = {np.shape(x)[0] for x in leaves if np.ndim(x) > 0}
  if len(shapes) != 1:
    raise ValueError(f"batch leaves must share leading axis B, got "
                     f"{sorted(shapes)}")
  return shapes.pop()


def _ghost_chunk(loss_with_aux, l2_clip, strategy, params, batch, mask, rng):
  b = _batch_size(batch)
  p_leaves, p_def = jax.tree.flatten(params)
  b_leaves, b_def = jax.tree.flatten(batch)
  r_leaves, r_def = jax.tree.flatten(rng)
  n_p, n_b = len(p_leaves), len(b_leaves)
  aux_defs = []

  def flat_loss(*flat):
    ps = jax.tree.unflatten(p_def, flat[:n_p])
    bs = jax.tree.unflatten(b_def, flat[n_p:n_p + n_b])
    rs = jax.tree.unflatten(r_def, flat[n_p + n_b:])
    loss, aux = loss_with_aux(ps, bs, rs)
    if jnp.shape(loss) != (b,):
      raise ValueError(f"loss_fn must return per-example losses of shape "
                       f"({b},), got {jnp.shape(loss)}")
    aux_leaves, aux_def = jax.tree.flatten(aux)
    aux_defs.append(aux_def)
    return (loss, *aux_leaves)

  flat_args = [*p_leaves, *b_leaves, *r_leaves]
  closed = jax.make_jaxpr(flat_loss)(*flat_args)
  aux_def = aux_defs[-1]
  batch_infos = [gt.BATCHED if np.ndim(x) and np.shape(x)[0] == b
                 else gt.CONST for x in b_leaves]
  an = gt.analyze(closed.jaxpr, n_p, batch_infos, len(r_leaves), b)
  fallback = list(an.fallback_leaves)
  taps = list(an.taps)
  if an.uses_rng and fallback:
    warnings.warn(
        "ghost clipping: loss_fn uses its rng and parameter leaves "
        f"{fallback} need vmap; all parameters fall back to vmap so that every "
        "per-example gradient comes from the same single-example trace.")
    fallback, taps = list(range(n_p)), []
  # Unused params with no tap and not in fallback get zero gradients.

  # ---- one forward + one backward, w.r.t. zero perturbations at the taps.
  # Under shard_map (data-parallel clipping) the perturbations must vary
  # along the mesh axes, or their cotangents are psummed over devices.
  axes = gt.varying_axes((flat_args, mask))
  zs0 = _vary([jnp.zeros(t.tap_shape, _tap_dtype(t, p_leaves))
               for t in taps], axes)

  def tapped(zs):
    outs, rec, side = gt.evaluate(closed, flat_args, taps, zs)
    loss = outs[0]
    total = jnp.sum(jnp.where(mask, loss, 0).astype(jnp.float32))
    return total, (outs, rec, side)

  if taps:
    total, vjp_fn, (outs, rec, side) = jax.vjp(tapped, zs0, has_aux=True)
    # ones_like keeps the loss's type, device-varying under shard_map.
    (gs,) = vjp_fn(jnp.ones_like(total))
  else:
    outs = jcore.jaxpr_as_fun(closed)(*flat_args)
    rec, gs, side = [], [], {}
  aux = jax.tree.unflatten(aux_def, outs[1:])

  # ---- per-example squared norms.
  sq = jnp.zeros((b,), jnp.float32)
  for t, a, g in zip(taps, rec, gs):
    sq = sq + _tap_sqnorm(t, a, g, p_leaves[t.leaf], strategy, side)

  fb_grads = None
  if fallback:
    fb_grads = _fallback_per_example(loss_with_aux, p_leaves, p_def, fallback,
                                     batch, rng, b_leaves, b, axes)
    for gleaf in fb_grads:
      sq = sq + jnp.sum(jnp.square(gleaf.astype(jnp.float32)).reshape(b, -1),
                        axis=1)

  norms = jnp.where(mask, jnp.sqrt(sq), 0.0)
  finite = jnp.isfinite(norms)
  keep = mask & finite
  w = jnp.where(keep, jnp.minimum(1.0, l2_clip / jnp.maximum(norms, 1e-30)),
                0.0)

  # ---- book-keeping: weighted contractions.
  grads = [None] * n_p
  for t, a, g in zip(taps, rec, gs):
    grads[t.leaf] = _tap_weighted_sum(t, a, g, w, keep, p_leaves[t.leaf],
                                      side)
  if fallback:
    for k, gleaf in zip(fallback, fb_grads):
      gleaf = jnp.where(keep.reshape((b,) + (1,) * (gleaf.ndim - 1)), gleaf, 0)
      grads[k] = jnp.tensordot(w.astype(gleaf.dtype), gleaf,
                               axes=1).astype(p_leaves[k].dtype)
  for k in range(n_p):
    if grads[k] is None:
      grads[k] = jnp.zeros_like(p_leaves[k])
  grads = _vary(grads, axes)   # one type for every leaf (and scan carries)

  num_real = jnp.sum(mask.astype(jnp.int32))
  clipped = jnp.sum((mask & (norms > l2_clip)).astype(jnp.float32))
  stats = GhostStats(
      per_example_norms=norms,
      num_real=num_real,
      frac_clipped=clipped / jnp.maximum(num_real, 1).astype(jnp.float32),
      aux=aux,
      num_nonfinite=jnp.sum((mask & ~finite).astype(jnp.int32)),
      num_fallback_params=len(fallback))
  return jax.tree.unflatten(p_def, grads), stats


def _tap_dtype(t, p_leaves):
  dt = p_leaves[t.leaf].dtype
  return dt if jnp.issubdtype(dt, jnp.floating) else jnp.float32


def _dot_mats(t, a, g):
  """Layer input and output gradient as [B, T, D_in] and [B, T, D_out]."""
  d = t.dims
  lc, xf = d["lc"], d["xf"]
  if d.get("fold"):   # recorded as [B*k, ...]: rows of an example contiguous
    a = a.reshape(d["x_shape"])
  b = a.shape[0]
  a = jnp.transpose(a, xf + lc)
  tt = int(np.prod([d["x_shape"][i] for i in xf[1:]], dtype=np.int64))
  din = int(np.prod([d["x_shape"][i] for i in lc], dtype=np.int64))
  dout = int(np.prod([d["w_shape"][i] for i in d["wf"]], dtype=np.int64))
  return a.reshape(b, tt, din), g.reshape(b, tt, dout)


def _tap_sqnorm(t, a, g, leaf, strategy, side):
  f32 = jnp.float32
  if t.kind == "dot":
    a3, g3 = _dot_mats(t, a, g)
    b, tt, din = a3.shape
    dout = g3.shape[2]
    use_gram = (strategy == "gram" or
                (strategy == "auto" and tt * (din + dout) <= din * dout))
    a3, g3 = a3.astype(f32), g3.astype(f32)
    if tt == 1 and strategy != "direct":
      return jnp.sum(a3[:, 0] ** 2, 1) * jnp.sum(g3[:, 0] ** 2, 1)
    if use_gram:
      ga = jnp.einsum("btd,bsd->bts", a3, a3)
      gg = jnp.einsum("btd,bsd->bts", g3, g3)
      return jnp.sum((ga * gg).reshape(b, -1), axis=1)
    per = jnp.einsum("btd,bto->bdo", a3, g3)
    return jnp.sum(jnp.square(per).reshape(b, -1), axis=1)
  if t.kind == "embed":
    ids, g3, valid = _embed_ids(t, a, g)
    g3 = jnp.where(valid[..., None], g3.astype(f32), 0)
    gg = jnp.einsum("btd,bsd->bts", g3, g3)
    same = ids[:, :, None] == ids[:, None, :]
    return jnp.sum(jnp.where(same, gg, 0).reshape(g3.shape[0], -1), axis=1)
  # "ew": per-example gradient = transpose of the row view, applied to g_i.
  per = _ew_per_example(t, g, leaf, side)
  return jnp.sum(jnp.square(per.astype(f32)).reshape(per.shape[0], -1),
                 axis=1)


def _ew_per_example(t, g, leaf, side):
  k = (t.dims or {}).get("fold")
  if k:
    # Output gradient [B*k, ...] of a bias on folded rows: example i's
    # gradient is the sum over its k rows (the view is linear).
    g = g.reshape((g.shape[0] // k, k) + g.shape[1:]).sum(1)
  f = gt.row_view_fn(t.chain, side, keep_precision=True)
  # The vjp's cotangent g_i has g's type: the primal must vary as g does.
  _, vjp = jax.vjp(f, _vary(leaf, gt.varying_axes(g)))
  return jax.vmap(lambda gi: vjp(gi.astype(leaf.dtype))[0])(g)


def _embed_ids(t, idx, g):
  b = g.shape[0]
  vocab = t.dims["vocab"]
  ids = idx.reshape(b, -1)
  d = g.shape[-1]
  g3 = g.reshape(b, -1, d)
  mode = t.dims["mode"]
  if "CLIP" in str(mode).upper():
    ids = jnp.clip(ids, 0, vocab - 1)
    valid = jnp.ones(ids.shape, bool)
  else:
    valid = (ids >= 0) & (ids < vocab)
  return ids, g3, valid


def _tap_weighted_sum(t, a, g, w, keep, leaf, side):
  b = keep.shape[0]
  if t.kind == "dot":
    a3, g3 = _dot_mats(t, a, g)
    dt = jnp.promote_types(a3.dtype, g3.dtype)
    kb = keep.reshape(b, 1, 1)
    a3 = jnp.where(kb, a3, 0).astype(dt)
    g3 = jnp.where(kb, g3, 0).astype(dt) * w.astype(dt).reshape(b, 1, 1)
    tt = a3.shape[1]
    m = jnp.tensordot(a3.reshape(b * tt, -1), g3.reshape(b * tt, -1),
                      axes=((0,), (0,)))
    d = t.dims
    lc_shape = [d["x_shape"][i] for i in d["lc"]]
    wf_shape = [d["w_shape"][i] for i in d["wf"]]
    m = m.reshape(lc_shape + wf_shape)
    order = list(d["rc"]) + list(d["wf"])
    view = jnp.transpose(m, np.argsort(order))
  elif t.kind == "embed":
    ids, g3, valid = _embed_ids(t, a, g)
    kb = keep.reshape(b, 1, 1) & valid[..., None]
    g3 = jnp.where(kb, g3, 0) * w.astype(g3.dtype).reshape(b, 1, 1)
    view = jnp.zeros((t.dims["vocab"], g3.shape[-1]), g3.dtype).at[
        ids.reshape(-1)].add(g3.reshape(-1, g3.shape[-1]), mode="drop")
  else:
    per = _ew_per_example(t, g, leaf, side)
    per = jnp.where(keep.reshape((b,) + (1,) * (per.ndim - 1)), per, 0)
    return jnp.tensordot(w.astype(per.dtype), per, axes=1).astype(leaf.dtype)
  # Map the gradient of the view back through the (linear) view chain.
  _, vjp = jax.vjp(
      lambda p: gt.apply_chain(t.chain, p, side, keep_precision=True),
      _vary(leaf, gt.varying_axes(view)))
  return vjp(view.astype(leaf.dtype))[0]


def _fallback_per_example(loss_with_aux, p_leaves, p_def, fallback, batch,
                          rng, b_leaves, b, axes):
  """Per-example gradients [B, ...] of the fallback leaves only (vmap).

  The differentiated leaves are made varying along `axes` (see `_vary`), so
  that under shard_map jax.grad does not psum them over devices.
  """
  in_axes_b = jax.tree.map(lambda x: 0 if np.ndim(x) and np.shape(x)[0] == b
                           else None, batch)

  def single(fb_vals, ex):
    leaves = list(p_leaves)
    for k, v in zip(fallback, fb_vals):
      leaves[k] = v
    params = jax.tree.unflatten(p_def, leaves)
    ex1 = jax.tree.map(lambda x, ax: x[None] if ax == 0 else x, ex, in_axes_b)
    loss, _ = loss_with_aux(params, ex1, rng)
    return loss[0]

  fb_vals = _vary([p_leaves[k] for k in fallback], axes)
  return jax.vmap(jax.grad(single), in_axes=(None, in_axes_b))(fb_vals, batch)
