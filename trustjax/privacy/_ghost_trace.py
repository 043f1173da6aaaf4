"""Jaxpr analysis and tapped evaluation behind ghost clipping (private).

`analyze` walks the jaxpr of `loss_fn(params, batch, rng)` once and decides:

* batch locality: every intermediate is classified CONST (independent of the
  batch data), BATCHED (leading axis B, row i depends only on example i and on
  CONST values) or MIXED. The per-example loss must come out BATCHED, else the
  model mixes examples (batch statistics, reductions over axis 0, or a
  primitive this analysis does not know) and ghost clipping refuses.
  A BATCHED [B, k, ...] value reshaped to [B*k, ...] is `Folded(k)` (rows of
  an example contiguous) until it is reshaped back.
* taps: the places where a parameter enters the computation in a form whose
  per-example gradient has a closed form from the layer input `a` and the
  output cotangent `g`:
    - "dot":   `y = dot_general(x, view(W))`, x BATCHED on the lhs, no batch
               dims (nnx.Linear, attention projections, einsum layers).
    - "embed": `y = gather(W, ids)` with the row-lookup pattern (nnx.Embed).
    - "ew":    `y = op(..., view(P), ...)` with `op` elementwise and `view(P)`
               broadcast over the batch axis (biases, LayerNorm scale/bias).
  A parameter with exactly one tap and no other use is handled by ghost norms;
  any other parameter (used twice, e.g. tied embeddings; used through an op
  not listed, e.g. a conv or weight standardisation) is a *fallback* parameter
  whose per-example gradients come from `vmap(grad)`.

`evaluate` re-runs the same jaxpr, adding zero perturbations `z` at the taps
and recording the layer inputs, so `d(sum loss)/dz` yields the per-example
output gradients (Goodfellow 2015; Li et al. 2022 "ghost clipping").
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable

import jax
import jax.extend.core as jcore
import jax.numpy as jnp

CONST, BATCHED, MIXED = "const", "batched", "mixed"


@dataclasses.dataclass(frozen=True)
class Folded:
  """A value of shape [B*k, ...] whose rows i*k .. i*k+k-1 belong to example
  i: a BATCHED [B, k, ...] value reshaped with its batch axis merged into the
  next (a dense layer applied to all tokens at once,
  `layer(x.reshape(-1, d)).reshape(b, t, -1)`, which XLA:CPU differentiates
  faster). Only elementwise ops, dense layers (dot taps), bias taps and the
  reshape back to [B, k, ...] keep it; anything else is MIXED."""
  k: int

_ELEMENTWISE = frozenset("""
add sub mul div neg max min pow integer_pow exp exp2 log log1p expm1 sqrt rsqrt
cbrt tanh logistic sin cos tan asin acos atan atan2 sinh cosh asinh acosh atanh
abs sign floor ceil round is_finite eq ne lt le gt ge and or not xor select_n
clamp erf erfc erf_inv lgamma digamma convert_element_type stop_gradient copy
copy_p square rem nextafter real imag conj add_any reduce_precision
shift_left shift_right_logical shift_right_arithmetic population_count
pvary
""".split())
_TAP_ELEMENTWISE = frozenset(["add", "sub", "mul", "div", "max", "min",
                              "select_n"])
_VIEW_PERM = frozenset(["convert_element_type", "reshape", "transpose",
                        "squeeze", "copy", "copy_p"])
_REDUCE = frozenset(["reduce_sum", "reduce_max", "reduce_min", "reduce_prod",
                     "reduce_and", "reduce_or", "argmax", "argmin"])
_CUMULATIVE = frozenset(["cumsum", "cumprod", "cummax", "cummin",
                         "cumlogsumexp"])
_TRANSPARENT = {"pjit": "jaxpr", "jit": "jaxpr", "closed_call": "call_jaxpr",
                "core_call": "call_jaxpr"}
_OPAQUE = {"custom_jvp_call": "call_jaxpr", "custom_vjp_call": "call_jaxpr",
           "custom_vjp_call_jaxpr": "fun_jaxpr", "checkpoint": "jaxpr",
           "remat": "jaxpr"}


@dataclasses.dataclass(frozen=True)
class PView:
  """A value that is `chain(params[leaf])` for a chain of view primitives."""
  leaf: int
  chain: tuple  # ((primitive, params, operand_pos, path, n_in), ...)
  perm: bool  # chain only permutes/reshapes/casts elements (norm-preserving)
  row_bcast: bool  # leading axis is a broadcast over the batch


@dataclasses.dataclass(frozen=True)
class Tap:
  kind: str  # "dot" | "embed" | "ew"
  leaf: int
  path: tuple  # eqn index path through transparent calls
  operand: int  # operand position of the parameter view
  chain: tuple
  dims: Any = None  # kind-specific static information
  tap_shape: tuple = ()  # shape of the perturbation z


@dataclasses.dataclass
class Analysis:
  taps: list  # Tap, only for ghost leaves
  ghost_leaves: list
  fallback_leaves: list
  fallback_reasons: dict  # leaf -> str
  uses_rng: bool


def _aval(v):
  return v.aval


def _is_float(x) -> bool:
  return jnp.issubdtype(jnp.result_type(x), jnp.floating)


def _apply_chain(chain, x, side_vals=None, keep_precision=False):
  """Applies the view chain to x; side operands (constant indices, scales)
  come from `side_vals[path]`, recorded by `evaluate`.

  With `keep_precision`, casts between float types are skipped and float
  side operands are cast to x's dtype, so the chain runs in x's precision
  (an f32 master parameter viewed through a cast to a bf16 compute dtype
  gives an f32 view, and its vjp an f32 gradient). Float casts are linear
  and identity on values up to rounding, so this is the same linear map
  evaluated without the rounding.
  """
  for prim, params, pos, path, n_in in chain:
    if (keep_precision and prim.name == "convert_element_type" and
        _is_float(x) and jnp.issubdtype(params["new_dtype"], jnp.floating)):
      continue
    ins = list(side_vals[path]) if n_in > 1 else [None]
    if keep_precision and _is_float(x):
      ins = [v.astype(jnp.result_type(x))
             if v is not None and _is_float(v) else v for v in ins]
    ins[pos] = x
    x = prim.bind(*ins, **prim.get_bind_params(params))
  return x


def chain_paths(taps) -> set:
  return {e[3] for t in taps for e in t.chain if e[4] > 1}


class _Analyzer:

  def __init__(self, batch_size: int):
    self.b = batch_size
    self.uses: dict[int, list] = {}  # leaf -> list of Tap | str (unsupported)
    self.first_mixed: str | None = None

  def _use(self, leaf, what):
    self.uses.setdefault(leaf, []).append(what)

  def _mixed(self, eqn, why):
    if self.first_mixed is None:
      self.first_mixed = f"`{eqn.primitive.name}` ({why}): {eqn}"
    return MIXED

  def run(self, jaxpr, infos, path):
    env = {}

    def read(v):
      if isinstance(v, jcore.Literal):
        return CONST
      return env.get(v, CONST)

    for v, info in zip(jaxpr.invars, infos):
      env[v] = info
    for v in jaxpr.constvars:
      env[v] = CONST
    for i, eqn in enumerate(jaxpr.eqns):
      p = path + (i,)
      ins = [read(v) for v in eqn.invars]
      outs = self.eqn(eqn, ins, p)
      for v, o in zip(eqn.outvars, outs):
        if not isinstance(v, jcore.DropVar):
          env[v] = o
    return [read(v) for v in jaxpr.outvars]

  def _status(self, info):
    return CONST if isinstance(info, PView) else info

  def _unsupported(self, ins, why):
    for info in ins:
      if isinstance(info, PView):
        self._use(info.leaf, why)

  def eqn(self, eqn, ins, path):
    name = eqn.primitive.name
    n_out = len(eqn.outvars)
    if name in _TRANSPARENT:
      closed = eqn.params[_TRANSPARENT[name]]
      inner = closed.jaxpr if hasattr(closed, "jaxpr") else closed
      return self.run(inner, ins, path)
    if name in _OPAQUE:
      self._unsupported(ins, f"used inside `{name}`")
      closed = eqn.params[_OPAQUE[name]]
      inner = closed.jaxpr if hasattr(closed, "jaxpr") else closed
      st = [self._status(x) for x in ins]
      return self.run(inner, st, path + ("opaque",))

    # Parameter views propagate.
    pviews = [x for x in ins if isinstance(x, PView)]
    if len(ins) == 1 and pviews:
      view = self._view(eqn, pviews[0], path)
      if view is not None:
        return [view]
    if len(pviews) == 1 and len(ins) > 1 and all(
        x == CONST or isinstance(x, PView) for x in ins):
      view = self._linear_view(eqn, ins, path)
      if view is not None:
        return [view]

    out_aval = _aval(eqn.outvars[0])
    if any(isinstance(x, Folded) for x in ins):
      return [self._folded(eqn, ins, path)] * n_out
    # Taps.
    if name == "dot_general" and len(pviews) == 1:
      tap = self._dot_tap(eqn, ins, path)
      if tap is not None:
        self._use(tap.leaf, tap)
        return [BATCHED]
    if name == "gather" and isinstance(ins[0], PView):
      tap = self._embed_tap(eqn, ins, path)
      if tap is not None:
        self._use(tap.leaf, tap)
        return [BATCHED]
    if (name in _TAP_ELEMENTWISE and pviews and out_aval.shape
        and out_aval.shape[0] == self.b):
      new_ins = list(ins)
      for k, info in enumerate(ins):
        if not isinstance(info, PView):
          continue
        shape = _aval(eqn.invars[k]).shape
        ok = (len(shape) == len(out_aval.shape) and len(shape) > 0 and
              (shape[0] == 1 or (shape[0] == self.b and info.row_bcast)))
        if ok and (name != "select_n" or k > 0):
          self._use(info.leaf, Tap("ew", info.leaf, path, k, info.chain,
                                   tap_shape=(self.b,) + tuple(shape[1:])))
          new_ins[k] = BATCHED
      ins = new_ins

    self._unsupported(ins, f"used by `{name}`")
    st = [self._status(x) for x in ins]
    if all(s == CONST for s in st):
      return [CONST] * n_out
    if any(s == MIXED for s in st):
      return [MIXED] * n_out
    return [self._local(eqn, st)] * n_out

  def _folded(self, eqn, ins, path):
    """Status of an eqn with a `Folded(k)` input (see `Folded`)."""
    name = eqn.primitive.name
    folds = {x.k for x in ins if isinstance(x, Folded)}
    out_shape = tuple(_aval(eqn.outvars[0]).shape)
    if len(folds) > 1 or any(x in (BATCHED, MIXED) for x in ins):
      self._unsupported(ins, f"used by `{name}`")
      return self._mixed(eqn, "folded rows mixed with other values")
    k = folds.pop()
    bk = self.b * k
    pviews = [x for x in ins if isinstance(x, PView)]
    if name == "dot_general" and len(pviews) == 1 and isinstance(ins[0],
                                                                  Folded):
      tap = self._dot_tap(eqn, ins, path, fold=k)
      if tap is not None:
        self._use(tap.leaf, tap)
        return Folded(k)
    tapped = set()
    if name in _TAP_ELEMENTWISE and pviews and out_shape and \
        out_shape[0] == bk:
      ins = list(ins)
      for j, info in enumerate(ins):
        if not isinstance(info, PView):
          continue
        shape = _aval(eqn.invars[j]).shape
        if (len(shape) == len(out_shape) and shape and shape[0] == 1
            and (name != "select_n" or j > 0)):
          self._use(info.leaf, Tap("ew", info.leaf, path, j, info.chain,
                                   dims=dict(fold=k),
                                   tap_shape=(bk,) + tuple(shape[1:])))
          ins[j] = Folded(k)
          tapped.add(j)
    self._unsupported(ins, f"used by `{name}`")
    st = [self._status(x) for x in ins]
    in_shapes = [tuple(_aval(v).shape) for v in eqn.invars]
    p = eqn.params
    ok = False
    if name in _ELEMENTWISE:
      # A tapped parameter view broadcasts along axis 0 (shape [1, ...]).
      ok = out_shape[:1] == (bk,) and all(
          s == CONST or j in tapped or sh[:1] == (bk,)
          for j, (s, sh) in enumerate(zip(st, in_shapes)))
    elif name == "reshape" and p.get("dimensions") is None:
      if out_shape == (self.b, k) + in_shapes[0][1:]:
        return BATCHED                      # unfolded again
      ok = out_shape[:1] == (bk,)           # axis 0 untouched
    elif name == "dot_general":
      (lc, _), (lb, rb) = p["dimension_numbers"]
      ok = (not lb and not rb and isinstance(st[0], Folded) and
            st[1] == CONST and 0 not in lc)
    elif name == "broadcast_in_dim":
      ok = (p["broadcast_dimensions"][:1] == (0,) and
            out_shape[:1] == (bk,))
    elif name in _REDUCE:
      ok = 0 not in p["axes"]
    return Folded(k) if ok else self._mixed(eqn, "folded rows")

  def _linear_view(self, eqn, ins, path):
    """Ops linear in the one parameter operand, other operands CONST:
    gather/dynamic_slice of a table by constant indices (learned positions
    `pos(jnp.arange(T))`), scaling by a constant."""
    name = eqn.primitive.name
    pos = next(i for i, x in enumerate(ins) if isinstance(x, PView))
    ok = ((name in ("gather", "dynamic_slice") and pos == 0) or
          name == "mul" or (name == "div" and pos == 0))
    if not ok:
      return None
    pv = ins[pos]
    chain = pv.chain + ((eqn.primitive, dict(eqn.params), pos, path,
                         len(ins)),)
    return PView(pv.leaf, chain, False, False)

  def _view(self, eqn, pv: PView, path):
    name = eqn.primitive.name
    if name == "pvary":
      # shard_map's invariant->varying cast: the same values. Not part of the
      # chain; ghost.py casts the parameter to the type its use needs.
      return pv
    if name not in _VIEW_PERM and name not in ("broadcast_in_dim", "slice",
                                               "reduce_sum", "neg"):
      return None
    chain = pv.chain + ((eqn.primitive, dict(eqn.params), 0, path, 1),)
    if name in ("slice", "reduce_sum", "neg"):
      return PView(pv.leaf, chain, False, False)
    if pv.row_bcast and name not in ("convert_element_type", "copy", "copy_p"):
      return PView(pv.leaf, chain, False, False)
    if name == "broadcast_in_dim":
      dims = eqn.params["broadcast_dimensions"]
      in_shape = _aval(eqn.invars[0]).shape
      out_shape = _aval(eqn.outvars[0]).shape
      row = bool(out_shape) and out_shape[0] == self.b and (
          0 not in dims or in_shape[list(dims).index(0)] == 1)
      return PView(pv.leaf, chain, False, row)
    return PView(pv.leaf, chain, pv.perm, False)

  def _dot_tap(self, eqn, ins, path, fold: int = 0):
    (lc, rc), (lb, rb) = eqn.params["dimension_numbers"]
    want = Folded(fold) if fold else BATCHED
    if lb or rb or not isinstance(ins[1], PView) or ins[0] != want:
      return None
    pv = ins[1]
    if not pv.perm or 0 in lc:
      return None
    x_shape = _aval(eqn.invars[0]).shape
    w_shape = _aval(eqn.invars[1]).shape
    if fold:
      # Describe the layer as applied to the unfolded input [B, k, ...]:
      # ghost.py reshapes the recorded input and output gradient to it.
      if not x_shape or x_shape[0] != self.b * fold:
        return None
      x_shape = (self.b, fold) + tuple(x_shape[1:])
      lc = tuple(c + 1 for c in lc)
    if not x_shape or x_shape[0] != self.b:
      return None
    xf = [d for d in range(len(x_shape)) if d not in lc]
    wf = [d for d in range(len(w_shape)) if d not in rc]
    dims = dict(lc=tuple(lc), rc=tuple(rc), xf=tuple(xf), wf=tuple(wf),
                x_shape=tuple(x_shape), w_shape=tuple(w_shape), fold=fold)
    return Tap("dot", pv.leaf, path, 1, pv.chain, dims,
               tuple(_aval(eqn.outvars[0]).shape))

  def _embed_tap(self, eqn, ins, path):
    pv = ins[0]
    if ins[1] != BATCHED or any(
        prim.name not in ("convert_element_type", "copy", "copy_p")
        for prim, *_ in pv.chain):
      return None
    dn = eqn.params["dimension_numbers"]
    op_shape = _aval(eqn.invars[0]).shape
    idx_shape = _aval(eqn.invars[1]).shape
    out_shape = _aval(eqn.outvars[0]).shape
    if (len(op_shape) != 2 or tuple(dn.offset_dims) != (len(out_shape) - 1,)
        or tuple(dn.collapsed_slice_dims) != (0,)
        or tuple(dn.start_index_map) != (0,) or dn.operand_batching_dims
        or tuple(eqn.params["slice_sizes"]) != (1, op_shape[1])
        or idx_shape[-1] != 1 or idx_shape[0] != self.b):
      return None
    return Tap("embed", pv.leaf, path, 0, pv.chain,
               dict(mode=eqn.params["mode"], vocab=op_shape[0]),
               tuple(out_shape))

  def _local(self, eqn, st):
    """Status of an eqn whose inputs are CONST/BATCHED, at least one BATCHED."""
    name = eqn.primitive.name
    b = self.b
    in_shapes = [_aval(v).shape for v in eqn.invars]
    out_shapes = [_aval(v).shape for v in eqn.outvars]
    p = eqn.params

    def lead_ok():
      # BATCHED inputs have leading axis b by construction (or 1 for a tapped
      # parameter view, which evaluation broadcasts to b).
      return all(s and s[0] == b for s in out_shapes)

    if name in _ELEMENTWISE:
      return BATCHED if lead_ok() else self._mixed(eqn, "shape")
    if name == "broadcast_in_dim":
      ok = p["broadcast_dimensions"][:1] == (0,) and in_shapes[0][0] == b
      return BATCHED if ok and lead_ok() else self._mixed(eqn, "axis 0")
    if name == "reshape":
      if p.get("dimensions") is not None:
        return self._mixed(eqn, "reshape of axis 0")
      if lead_ok():
        return BATCHED
      x, y = in_shapes[0], out_shapes[0]
      if (len(x) >= 2 and x[1] > 1 and y[:1] == (b * x[1],)
          and y[1:] == x[2:]):
        return Folded(x[1])                 # [B, k, ...] -> [B*k, ...]
      return self._mixed(eqn, "reshape of axis 0")
    if name == "squeeze":
      return (BATCHED if 0 not in p["dimensions"] and lead_ok() else
              self._mixed(eqn, "axis 0"))
    if name == "transpose":
      return (BATCHED if p["permutation"][0] == 0 and lead_ok() else
              self._mixed(eqn, "axis 0 moved"))
    if name in _REDUCE:
      return (BATCHED if 0 not in p["axes"] and lead_ok() else
              self._mixed(eqn, "reduces over the batch axis"))
    if name in _CUMULATIVE or name == "sort":
      ax = p.get("axis", p.get("dimension"))
      return BATCHED if ax != 0 and lead_ok() else self._mixed(eqn, "axis 0")
    if name in ("concatenate", "split"):
      ax = p.get("dimension", p.get("axis"))
      ok = ax != 0 and all(sh and sh[0] == b for sh in in_shapes)
      return BATCHED if ok and lead_ok() else self._mixed(eqn, "axis 0")
    if name == "pad":
      ok = tuple(p["padding_config"][0]) == (0, 0, 0) and st[1] == CONST
      return BATCHED if ok and lead_ok() else self._mixed(eqn, "axis 0")
    if name == "slice":
      ok = (p["start_indices"][0] == 0 and p["limit_indices"][0] == b and
            (p["strides"] is None or p["strides"][0] == 1))
      return BATCHED if ok and lead_ok() else self._mixed(eqn, "axis 0")
    if name == "dynamic_slice":
      ok = p["slice_sizes"][0] == b and all(s == CONST for s in st[1:])
      return BATCHED if ok and lead_ok() else self._mixed(eqn, "axis 0")
    if name == "dot_general":
      (lc, rc), (lb, rb) = p["dimension_numbers"]
      if lb and lb[0] == 0 and rb[0] == 0:
        ok = True
      elif not lb and st[0] == BATCHED and st[1] == CONST and 0 not in lc:
        ok = True
      else:
        ok = False
      return BATCHED if ok and lead_ok() else self._mixed(eqn, "contraction")
    if name == "conv_general_dilated":
      dn = p["dimension_numbers"]
      ok = (st[0] == BATCHED and st[1] == CONST and dn.lhs_spec[0] == 0 and
            dn.out_spec[0] == 0 and p["batch_group_count"] == 1)
      return BATCHED if ok and lead_ok() else self._mixed(eqn, "conv")
    if name == "gather":
      dn = p["dimension_numbers"]
      out_nd = len(out_shapes[0])
      batch_out = [d for d in range(out_nd) if d not in dn.offset_dims]
      if st[1] == BATCHED or (st[0] == BATCHED and dn.operand_batching_dims):
        # output axis 0 must be indices axis 0, and a batched operand must be
        # indexed row-by-row through batching dims (take_along_axis).
        ok = bool(batch_out) and batch_out[0] == 0
        if st[0] == BATCHED:
          obd, ibd = dn.operand_batching_dims, dn.start_indices_batching_dims
          ok = ok and 0 in obd and ibd[list(obd).index(0)] == 0
      else:  # batched operand, constant indices: axis 0 passed through whole
        ok = (st[0] == BATCHED and dn.offset_dims[:1] == (0,)
              and 0 not in dn.collapsed_slice_dims
              and 0 not in dn.start_index_map
              and p["slice_sizes"][0] == b)
      return BATCHED if ok and lead_ok() else self._mixed(eqn, "gather")
    return self._mixed(eqn, "primitive unknown to the batch-locality analysis")


def analyze(jaxpr, n_params: int, batch_infos: list, n_rng: int,
            batch_size: int) -> Analysis:
  """Classifies parameter leaves into ghost taps and vmap fallbacks.

  Raises ValueError when the per-example loss is not provably batch-local.
  """
  an = _Analyzer(batch_size)
  infos = ([PView(k, (), True, False) for k in range(n_params)] +
           list(batch_infos) + [CONST] * n_rng)
  outs = an.run(jaxpr, infos, ())
  if outs[0] != BATCHED:
    why = an.first_mixed or f"the per-example loss has status {outs[0]}"
    raise ValueError(
        "ghost clipping cannot prove that example i's loss depends only on "
        f"example i (first offending op: {why}). Models that mix examples "
        "across the batch (e.g. batch statistics) have no per-example "
        "gradient; use method='vmap' if the model is in fact per-example.")
  ghost, fallback, reasons, taps = [], [], {}, []
  for k in range(n_params):
    uses = an.uses.get(k, [])
    bad = [u for u in uses if not isinstance(u, Tap)]
    if len(uses) == 1 and not bad:
      ghost.append(k)
      taps.append(uses[0])
    elif not uses:
      ghost.append(k)  # unused parameter: zero gradient
    else:
      fallback.append(k)
      reasons[k] = "; ".join(
          u if isinstance(u, str) else f"{u.kind} layer" for u in uses)
      if len(uses) > 1 and not bad:
        reasons[k] = f"used {len(uses)} times (shared weights)"
  first_rng = n_params + len(batch_infos)
  rng_vars = set(jaxpr.invars[first_rng:first_rng + n_rng])
  uses_rng = _uses_any(jaxpr, rng_vars)
  return Analysis(taps, ghost, fallback, reasons, uses_rng)


def _uses_any(jaxpr, vars_) -> bool:
  if not vars_:
    return False
  for eqn in jaxpr.eqns:
    for v in eqn.invars:
      if not isinstance(v, jcore.Literal) and v in vars_:
        return True
  return any(not isinstance(v, jcore.Literal) and v in vars_
             for v in jaxpr.outvars)


def evaluate(closed, args: list, taps: list, zs: list):
  """Evaluates `closed` with `zs[j]` added at `taps[j]`.

  Returns (outputs, recorded, side_vals): recorded[j] is the layer input of
  a "dot" tap (the batched operand), the index operand of an "embed" tap, and
  None for "ew" taps; side_vals[path] holds the operands of view-chain ops
  with constant side inputs (see `_apply_chain`).
  """
  by_path = {t.path: j for j, t in enumerate(taps)}
  recorded = [None] * len(taps)
  want_side = chain_paths(taps)
  side_vals = {}

  def run(jaxpr, consts, vals, path):
    env = {}

    def read(v):
      return v.val if isinstance(v, jcore.Literal) else env[v]

    for v, x in zip(jaxpr.constvars, consts):
      env[v] = x
    for v, x in zip(jaxpr.invars, vals):
      env[v] = x
    for i, eqn in enumerate(jaxpr.eqns):
      p = path + (i,)
      invals = [read(v) for v in eqn.invars]
      j = by_path.get(p)
      name = eqn.primitive.name
      if p in want_side:
        side_vals[p] = list(invals)
      if j is not None and taps[j].kind == "ew":
        k = taps[j].operand
        invals[k] = jnp.broadcast_to(invals[k], zs[j].shape) + zs[j].astype(
            invals[k].dtype)
      if name in _TRANSPARENT:
        closed_inner = eqn.params[_TRANSPARENT[name]]
        if hasattr(closed_inner, "jaxpr"):
          outs = run(closed_inner.jaxpr, closed_inner.consts, invals, p)
        else:
          outs = run(closed_inner, (), invals, p)
      elif name == "pvary":
        # A tap may have made the operand varying already (zero perturbations
        # vary along the mesh axes); cast only along the axes still missing.
        outs = [pvary_missing(invals[0], eqn.params["axes"])]
      else:
        bind_params = eqn.primitive.get_bind_params(eqn.params)
        with eqn.ctx.manager:
          outs = eqn.primitive.bind(*invals, **bind_params)
        if not eqn.primitive.multiple_results:
          outs = [outs]
      if j is not None and taps[j].kind in ("dot", "embed"):
        recorded[j] = invals[0] if taps[j].kind == "dot" else invals[1]
        outs = [outs[0] + zs[j].astype(outs[0].dtype)] + list(outs[1:])
      for v, x in zip(eqn.outvars, outs):
        if not isinstance(v, jcore.DropVar):
          env[v] = x
    return [read(v) for v in jaxpr.outvars]

  outs = run(closed.jaxpr, closed.consts, args, ())
  return outs, recorded, side_vals


def varying_axes(tree: Any) -> tuple:
  """Mesh axes along which some leaf of `tree` varies (inside `shard_map`).

  Empty outside `shard_map`. Order: first appearance, for a stable trace.
  """
  axes = []
  for x in jax.tree.leaves(tree):
    aval = jax.typeof(x)
    mat = getattr(aval, "manual_axis_type", None)
    names = getattr(mat, "varying", None)
    if names is None:
      names = getattr(aval, "vma", ())
    for a in sorted(names, key=str):
      if a not in axes:
        axes.append(a)
  return tuple(axes)


def pvary_missing(x, axes):
  """`x` cast to device-varying along those of `axes` it does not vary on."""
  have = varying_axes(x)
  missing = tuple(a for a in axes if a not in have)
  return jax.lax.pcast(x, missing, to="varying") if missing else x


def row_view_fn(chain, side_vals, keep_precision=False) -> Callable:
  """p -> chain(p)[0]: one example's view of a parameter broadcast over B."""

  def f(p):
    v = _apply_chain(chain, p, side_vals, keep_precision)
    return v[0]

  return f


apply_chain = _apply_chain
