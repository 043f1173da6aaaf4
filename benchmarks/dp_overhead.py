"""DP-SGD step cost vs non-private: naive vmap, micro-batched vmap, ghost.

Claim measured: ghost / book-keeping clipping (`trustjax.privacy.ghost`) and
the fused Gaussian noise (`trustjax.privacy.noise_normal`) make a DP-SGD
train step cost close to a non-private one.

  python benchmarks/dp_overhead.py --workloads=a,b,c --steps=20

Workloads: (a) MLP 784-512-512-10, B=256; (b) transformer classifier (vocab
8192, d=128, 2 layers, 4 heads, MLP 512, T=64, B=64); (c) GPT-2-shaped causal
LM (6 layers, d=384, 6 heads, T=128, B=16, untied head, vocab --lm_vocab).
Each step = clipped gradient sum (or plain gradient) + Gaussian noise (DP
only) + Adam update, one jitted function. Arms (--methods):
  nonprivate      mean loss, jax.grad, Adam. Every arm but the next runs
                  the transformers with their dense layers on [B*T, d]
                  (`Transformer(fold=True)`, as `trustjax.models.dense`: same
                  function, the fastest JAX formulation found on XLA:CPU;
                  ghost clipping follows the folded rows since session 4).
  nonprivate_unfolded  the same on the [B, T, d] formulation.
  vmap            clipped_grad(method="vmap") + dpsgd(Adam) (library noise).
  micro_vmap      the same in chunks of B/8 (microbatch_size).
  ghost           clipped_grad(method="ghost") + dpsgd(Adam).
  auto            clipped_grad(method="auto") + dpsgd(Adam): the default.
  auto_jaxnormal  auto, with the noise drawn by `jax.random.normal` (the
                  implementation before noise_normal; same values).
  ghost_nonoise   ghost clipping + Adam without noise: the clipping cost.
  auto_bf16       auto with compute_dtype=bfloat16 (mixed precision).
All arms are compiled first, warmed up, then timed in --rounds rounds with
the arms in a shuffled order per round (load from other processes hits all
arms alike); median ms, inter-quartile range and minimum per arm; ratios to
nonprivate from the same run (`_ratio` of medians, `_min_ratio` of minima,
the latter less sensitive to other processes on a shared machine). Memory: the compiled step's
`memory_analysis()` temp bytes (device `memory_stats()` is unavailable on
CPU). Prints one JSON line per workload.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from trustjax.models.dense import dense
from trustjax.privacy import clipped_grad
from trustjax.privacy import dpsgd

L2_CLIP, SIGMA = 1.0, 1.0


# ----------------------------------------------------------------- models
class MLP(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(784, 512, rngs=rngs)
    self.l2 = nnx.Linear(512, 512, rngs=rngs)
    self.l3 = nnx.Linear(512, 10, rngs=rngs)

  def __call__(self, x):
    return self.l3(jax.nn.relu(self.l2(jax.nn.relu(self.l1(x)))))


def _dense(layer, x, fold):
  """`layer(x)` for x[..., d]; `fold`: applied to x reshaped to [N, d].

  Same function either way. Folded, the weight gradient is one 2-D
  `dot(x[N,d], g[N,f])` contracting axis 0; unfolded (x[B,T,d]), XLA:CPU
  (jaxlib 0.10.2) canonicalises the two contracting axes (B, T) by
  materialising a transposed copy of g and then runs an Eigen dot with both
  operands transposed: 15-27% of the transformer step's CPU time (session 4,
  benchmarks/peers/README.md). The library's models do the same
  (`trustjax.models.dense`), and ghost clipping follows the folded rows.
  """
  return dense(layer, x) if fold else layer(x)


class Block(nnx.Module):

  def __init__(self, d, heads, d_ff, causal, rngs, fold=False):
    self.heads, self.causal, self.fold = heads, causal, fold
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
    self.o = nnx.Linear(d, d, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.ff1 = nnx.Linear(d, d_ff, rngs=rngs)
    self.ff2 = nnx.Linear(d_ff, d, rngs=rngs)

  def __call__(self, x, tok_mask):
    b, t, d = x.shape
    lin = lambda layer, y: _dense(layer, y, self.fold)
    q, k, v = jnp.split(lin(self.qkv, self.ln1(x)), 3, axis=-1)
    hd = d // self.heads
    # Heads-first [B, H, T, hd] (as torch's q.view(...).transpose(1, 2)):
    # the attention dots are then plain batched GEMMs (~4% less CPU time on
    # (c) than "bqhd,bkhd->bhqk" in one single-thread run; same on (b)).
    q, k, v = (y.reshape(b, t, self.heads, hd).transpose(0, 2, 1, 3)
               for y in (q, k, v))
    s = jnp.einsum("bhqd,bhkd->bhqk", q, k) / np.sqrt(hd)
    allowed = tok_mask[:, None, None, :]
    if self.causal:
      allowed = allowed & jnp.tril(jnp.ones((t, t), bool))[None, None]
    s = jnp.where(allowed, s, -1e9)
    a = jnp.einsum("bhqk,bhkd->bhqd", jax.nn.softmax(s, axis=-1), v)
    x = x + lin(self.o, a.transpose(0, 2, 1, 3).reshape(b, t, d))
    return x + lin(self.ff2, jax.nn.gelu(lin(self.ff1, self.ln2(x))))


class Transformer(nnx.Module):
  """Encoder classifier (causal=False) or causal LM (causal=True).

  `fold=True` applies every dense layer to [B*T, d] (`_dense`): same
  function and parameters, faster gradients on XLA:CPU (all arms but
  `nonprivate_unfolded`).
  """

  def __init__(self, vocab, d, layers, heads, d_ff, t, out, causal, rngs,
               fold=False):
    self.embed = nnx.Embed(vocab, d, rngs=rngs)
    self.pos = nnx.Embed(t, d, rngs=rngs)
    self.blocks = nnx.List([Block(d, heads, d_ff, causal, rngs, fold)
                            for _ in range(layers)])
    self.ln = nnx.LayerNorm(d, rngs=rngs)
    self.head = nnx.Linear(d, out, rngs=rngs)
    self.causal, self.fold = causal, fold

  def __call__(self, ids, tok_mask):
    t = ids.shape[1]
    x = self.embed(ids) + self.pos(jnp.arange(t))[None]
    for blk in self.blocks:
      x = blk(x, tok_mask)
    x = self.ln(x)
    if self.causal:
      return _dense(self.head, x, self.fold)
    m = tok_mask.astype(x.dtype)[..., None]
    return self.head(jnp.sum(x * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0))


def _ce(logits, labels):
  logp = jax.nn.log_softmax(logits)
  return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def workload(name, lm_vocab, fold=False):
  """(loss_fn, params, batch, B) of workload `name`; `fold`: Transformer(fold)
  (same params and batch; the MLP of (a) is unaffected)."""
  rng = np.random.default_rng(0)
  if name == "a":
    model, b = MLP(nnx.Rngs(0)), 256
    batch = {"x": rng.normal(size=(b, 784)).astype(np.float32),
             "label": rng.integers(0, 10, b).astype(np.int32)}
    apply = lambda m, bt: _ce(m(bt["x"]), bt["label"])
  elif name == "b":
    b, t = 64, 64
    model = Transformer(8192, 128, 2, 4, 512, t, 10, False, nnx.Rngs(0),
                        fold)
    batch = {"ids": rng.integers(0, 8192, (b, t)).astype(np.int32),
             "mask": np.arange(t)[None] < rng.integers(8, t + 1, (b, 1)),
             "label": rng.integers(0, 10, b).astype(np.int32)}
    apply = lambda m, bt: _ce(m(bt["ids"], bt["mask"]), bt["label"])
  elif name == "c":
    b, t = 16, 128
    model = Transformer(lm_vocab, 384, 6, 6, 1536, t, lm_vocab, True,
                        nnx.Rngs(0), fold)
    batch = {"ids": rng.integers(0, lm_vocab, (b, t + 1)).astype(np.int32)}

    def apply(m, bt):
      ids = bt["ids"]
      tm = jnp.ones(ids[:, :-1].shape, bool)
      return jnp.mean(_ce(m(ids[:, :-1], tm), ids[:, 1:]), axis=1)
  else:
    raise ValueError(f"unknown workload {name!r}; valid: a, b, c")
  graphdef, params = nnx.split(model, nnx.Param)

  def loss_fn(p, bt, r):
    del r
    return apply(nnx.merge(graphdef, p), bt), None

  return loss_fn, params, jax.tree.map(jnp.asarray, batch), b


# ------------------------------------------------------ clipped-grad paths
DP_KINDS = ("vmap", "micro_vmap", "ghost", "auto", "auto_jaxnormal",
            "ghost_nonoise", "auto_bf16")


def _jax_normal_noise(l2_clip, sigma, expected_batch_size, seed):
  """The noise transform as it was before `noise_normal` (for comparison).

  Same key schedule and values as `trustjax.privacy.gaussian_noise`, but the
  normals come from `jax.random.normal` (rolled Threefry loop on XLA:CPU).
  """
  base = jax.random.key_data(jax.random.key(seed))

  def init_fn(params):
    del params
    return (base, jnp.zeros([], jnp.int32))

  def update_fn(updates, state, params=None):
    del params
    key = jax.random.fold_in(jax.random.wrap_key_data(state[0]), state[1])
    leaves, tdef = jax.tree.flatten(updates)
    keys = jax.random.split(key, len(leaves))
    std = sigma * l2_clip
    out = [(x + std * jax.random.normal(k, x.shape, jnp.float32))
           / expected_batch_size for x, k in zip(leaves, keys)]
    return tdef.unflatten(out), (state[0], state[1] + 1)

  return optax.GradientTransformation(init_fn, update_fn)


def make_optimizer(kind, b, opt):
  """The optimizer of an arm: `opt` behind the arm's Gaussian noise."""
  if kind in ("nonprivate", "nonprivate_unfolded", "ghost_nonoise"):
    return opt
  if kind == "auto_jaxnormal":
    return optax.chain(_jax_normal_noise(L2_CLIP, SIGMA, b, 0), opt)
  return dpsgd(opt, L2_CLIP, SIGMA, b, seed=0)


def make_step(kind, loss_fn, b, opt):
  """Jitted `step(params, opt_state, batch, mask) -> (params, opt_state)`.

  `opt` is the plain optimizer; DP arms put it behind their noise transform
  (`make_optimizer`), so their opt_state is `make_optimizer(...).init(p)`.
  """
  if kind in ("nonprivate", "nonprivate_unfolded"):
    def grads(p, bt, m):
      f = lambda p_: jnp.sum(jnp.where(m, loss_fn(p_, bt, None)[0], 0.0)) / b
      return jax.grad(f)(p)
    tx = opt
  elif kind in DP_KINDS:
    method = {"vmap": "vmap", "micro_vmap": "vmap", "ghost": "ghost",
              "ghost_nonoise": "ghost"}.get(kind, "auto")
    micro = max(b // 8, 1) if kind == "micro_vmap" else None
    cdt = jnp.bfloat16 if kind == "auto_bf16" else None
    clip = clipped_grad(loss_fn, L2_CLIP, method=method,
                        microbatch_size=micro, compute_dtype=cdt)

    def grads(p, bt, m):
      g = clip(p, bt, m, None)[0]
      if kind == "ghost_nonoise":   # isolates the clipping cost
        return jax.tree.map(lambda x: x / b, g)
      return g                      # the noise transform divides by b
    tx = make_optimizer(kind, b, opt)
  else:
    raise ValueError(f"unknown kind {kind!r}; valid: nonprivate, "
                     "nonprivate_unfolded, "
                     f"{', '.join(DP_KINDS)}")

  def step(p, s, bt, m):
    upd, s = tx.update(grads(p, bt, m), s, p)
    return optax.apply_updates(p, upd), s

  return jax.jit(step)


def compile_step(step, params, opt_state, batch, mask):
  """Compiles a jitted `step(params, opt_state, batch, mask) -> (params,
  opt_state)` ahead of time; returns (run_one_step, compiled, compile_s),
  where `run_one_step()` advances its own copy of the state and blocks.
  Shared by this script and the peer comparisons in benchmarks/peers/."""
  state = {"p": params, "s": opt_state}
  t0 = time.perf_counter()
  compiled = step.lower(state["p"], state["s"], batch, mask).compile()
  compile_s = time.perf_counter() - t0

  def run():
    state["p"], state["s"] = compiled(state["p"], state["s"], batch, mask)
    jax.block_until_ready(state["p"])
  return run, compiled, compile_s


def compile_arm(kind, loss_fn, params, batch, b, opt):
  """Compiles an arm; returns (run_one_step, temp_bytes, compile_s)."""
  mask = jnp.ones((b,), bool)
  run, compiled, compile_s = compile_step(
      make_step(kind, loss_fn, b, opt), params,
      make_optimizer(kind, b, opt).init(params), batch, mask)
  mem = None
  try:
    ma = compiled.memory_analysis()
    mem = int(ma.temp_size_in_bytes) if ma is not None else None
  except Exception:  # pylint: disable=broad-except
    pass
  return run, mem, compile_s


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workloads", default="a,b,c")
  ap.add_argument("--steps", type=int, default=10,
                  help="timed steps per arm (spread over --rounds)")
  ap.add_argument("--rounds", type=int, default=0,
                  help="interleaving rounds (0: one per timed step)")
  ap.add_argument("--warmup", type=int, default=2)
  ap.add_argument("--lm_vocab", type=int, default=8192)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--methods",
                  default="nonprivate,nonprivate_unfolded,vmap,micro_vmap,"
                  "ghost,auto,"
                  "auto_jaxnormal,ghost_nonoise,auto_bf16")
  args = ap.parse_args()
  kinds = args.methods.split(",")
  rounds = args.rounds or args.steps
  per_round = max(1, -(-args.steps // rounds))
  for name in args.workloads.split(","):
    load0 = os.getloadavg()[0]
    loss_fn, params, batch, b = workload(name, args.lm_vocab)
    loss_fold = workload(name, args.lm_vocab, fold=True)[0]
    opt = optax.adam(1e-3)
    res = {"benchmark": "dp_overhead", "workload": name, "batch": b,
           "timed_steps_per_arm": rounds * per_round, "jax": jax.__version__,
           "device": jax.devices()[0].device_kind,
           "machine": platform.machine(), "cpu_count": os.cpu_count(),
           "num_params": int(sum(x.size for x in jax.tree.leaves(params)))}
    arms = {}
    for kind in kinds:
      arms[kind], res[f"{kind}_temp_bytes"], cs = compile_arm(
          kind, loss_fn if kind == "nonprivate_unfolded" else loss_fold,
          params, batch,
          b, opt)
      res[f"{kind}_compile_s"] = round(cs, 2)
    for run in arms.values():
      for _ in range(args.warmup):
        run()
    # Arms interleaved in a shuffled order per round: load from other
    # processes on a shared machine hits every arm alike.
    times = {k: [] for k in arms}
    order, rnd = list(arms), random.Random(args.seed)
    for _ in range(rounds):
      rnd.shuffle(order)
      for k in order:
        for _ in range(per_round):
          t0 = time.perf_counter()
          arms[k]()
          times[k].append((time.perf_counter() - t0) * 1e3)
    for k, v in times.items():
      res[f"{k}_ms"] = round(statistics.median(v), 2)
      res[f"{k}_iqr_ms"] = [round(float(x), 2)
                            for x in np.percentile(v, [25, 75])]
      res[f"{k}_min_ms"] = round(min(v), 2)
    stats = jax.devices()[0].memory_stats()
    if stats and stats.get("peak_bytes_in_use") is not None:
      res["peak_bytes_in_use_process"] = stats["peak_bytes_in_use"]
    base = res.get("nonprivate_ms")
    if base:
      for k in kinds:
        if k != "nonprivate":
          res[f"{k}_ratio"] = round(res[f"{k}_ms"] / base, 3)
          res[f"{k}_min_ratio"] = round(
              res[f"{k}_min_ms"] / res["nonprivate_min_ms"], 3)
    if res.get("vmap_ms") and res.get("auto_ms"):
      res["auto_speedup_vs_vmap"] = round(res["vmap_ms"] / res["auto_ms"], 2)
    res["loadavg_1m_before_after"] = [round(load0, 2),
                                      round(os.getloadavg()[0], 2)]
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
  main()
