"""DP-SGD step cost vs non-private: naive vmap, micro-batched vmap, ghost.

Claim measured: ghost / book-keeping clipping (`trustjax.privacy.ghost`) makes
a DP-SGD train step cost close to a non-private one.

  python benchmarks/dp_overhead.py --workloads=a,b,c --steps=10

Workloads: (a) MLP 784-512-512-10, B=256; (b) transformer classifier (vocab
8192, d=128, 2 layers, 4 heads, MLP 512, T=64, B=64); (c) GPT-2-shaped causal
LM (6 layers, d=384, 6 heads, T=128, B=16, untied head, vocab --lm_vocab).
Each step = clipped gradient sum (or plain gradient) + Gaussian noise (DP
only) + Adam update, jitted; median wall ms over --steps after 2 warm-ups.
`ghost_nonoise` is the ghost step without the Gaussian noise draw (threefry
sampling of one normal per parameter is a visible part of a small step).
Memory: device `memory_stats()` peak when available, else the compiled
step's `memory_analysis()` temp bytes. Prints one JSON line per workload.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from trustjax.privacy.ghost import ghost_clipped_grad

L2_CLIP, SIGMA = 1.0, 1.0


# ----------------------------------------------------------------- models
class MLP(nnx.Module):

  def __init__(self, rngs):
    self.l1 = nnx.Linear(784, 512, rngs=rngs)
    self.l2 = nnx.Linear(512, 512, rngs=rngs)
    self.l3 = nnx.Linear(512, 10, rngs=rngs)

  def __call__(self, x):
    return self.l3(jax.nn.relu(self.l2(jax.nn.relu(self.l1(x)))))


class Block(nnx.Module):

  def __init__(self, d, heads, d_ff, causal, rngs):
    self.heads, self.causal = heads, causal
    self.ln1 = nnx.LayerNorm(d, rngs=rngs)
    self.qkv = nnx.Linear(d, 3 * d, rngs=rngs)
    self.o = nnx.Linear(d, d, rngs=rngs)
    self.ln2 = nnx.LayerNorm(d, rngs=rngs)
    self.ff1 = nnx.Linear(d, d_ff, rngs=rngs)
    self.ff2 = nnx.Linear(d_ff, d, rngs=rngs)

  def __call__(self, x, tok_mask):
    b, t, d = x.shape
    q, k, v = jnp.split(self.qkv(self.ln1(x)), 3, axis=-1)
    hd = d // self.heads
    q, k, v = (y.reshape(b, t, self.heads, hd) for y in (q, k, v))
    s = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hd)
    allowed = tok_mask[:, None, None, :]
    if self.causal:
      allowed = allowed & jnp.tril(jnp.ones((t, t), bool))[None, None]
    s = jnp.where(allowed, s, -1e9)
    a = jnp.einsum("bhqk,bkhd->bqhd", jax.nn.softmax(s, axis=-1), v)
    x = x + self.o(a.reshape(b, t, d))
    return x + self.ff2(jax.nn.gelu(self.ff1(self.ln2(x))))


class Transformer(nnx.Module):
  """Encoder classifier (causal=False) or causal LM (causal=True)."""

  def __init__(self, vocab, d, layers, heads, d_ff, t, out, causal, rngs):
    self.embed = nnx.Embed(vocab, d, rngs=rngs)
    self.pos = nnx.Embed(t, d, rngs=rngs)
    self.blocks = nnx.List([Block(d, heads, d_ff, causal, rngs)
                            for _ in range(layers)])
    self.ln = nnx.LayerNorm(d, rngs=rngs)
    self.head = nnx.Linear(d, out, rngs=rngs)
    self.causal = causal

  def __call__(self, ids, tok_mask):
    t = ids.shape[1]
    x = self.embed(ids) + self.pos(jnp.arange(t))[None]
    for blk in self.blocks:
      x = blk(x, tok_mask)
    x = self.ln(x)
    if self.causal:
      return self.head(x)
    m = tok_mask.astype(x.dtype)[..., None]
    return self.head(jnp.sum(x * m, 1) / jnp.maximum(jnp.sum(m, 1), 1.0))


def _ce(logits, labels):
  logp = jax.nn.log_softmax(logits)
  return -jnp.take_along_axis(logp, labels[..., None], axis=-1)[..., 0]


def workload(name, lm_vocab):
  rng = np.random.default_rng(0)
  if name == "a":
    model, b = MLP(nnx.Rngs(0)), 256
    batch = {"x": rng.normal(size=(b, 784)).astype(np.float32),
             "label": rng.integers(0, 10, b).astype(np.int32)}
    apply = lambda m, bt: _ce(m(bt["x"]), bt["label"])
  elif name == "b":
    b, t = 64, 64
    model = Transformer(8192, 128, 2, 4, 512, t, 10, False, nnx.Rngs(0))
    batch = {"ids": rng.integers(0, 8192, (b, t)).astype(np.int32),
             "mask": np.arange(t)[None] < rng.integers(8, t + 1, (b, 1)),
             "label": rng.integers(0, 10, b).astype(np.int32)}
    apply = lambda m, bt: _ce(m(bt["ids"], bt["mask"]), bt["label"])
  elif name == "c":
    b, t = 16, 128
    model = Transformer(lm_vocab, 384, 6, 6, 1536, t, lm_vocab, True,
                        nnx.Rngs(0))
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
def vmap_clipped(loss_fn, microbatch_size=None):
  """Naive `vmap(grad)` reference (trustjax.privacy.clipping if present)."""
  try:
    from trustjax.privacy.clipping import clipped_grad
    fn = clipped_grad(loss_fn, L2_CLIP, method="vmap",
                      microbatch_size=microbatch_size, nan_policy="drop")
    return lambda p, bt, m: fn(p, bt, m, None)[0], "trustjax.clipping.vmap"
  except Exception:  # pylint: disable=broad-except
    pass

  def chunk(p, bt, m):
    g1 = lambda p_, ex: loss_fn(p_, jax.tree.map(lambda x: x[None], ex),
                                None)[0][0]
    g = jax.vmap(jax.grad(g1), in_axes=(None, 0))(p, bt)
    sq = sum(jnp.sum(jnp.square(x).reshape(x.shape[0], -1), 1)
             for x in jax.tree.leaves(g))
    w = jnp.where(m, jnp.minimum(1.0, L2_CLIP / jnp.sqrt(sq + 1e-30)), 0.0)
    return jax.tree.map(lambda x: jnp.tensordot(w, x, axes=1), g)

  if microbatch_size is None:
    return chunk, "local vmap"

  def fn(p, bt, m):
    b = m.shape[0]
    n = b // microbatch_size
    sp = lambda x: x.reshape((n, microbatch_size) + x.shape[1:])
    body = lambda acc, xs: (jax.tree.map(jnp.add, acc, chunk(p, *xs)), None)
    out, _ = jax.lax.scan(body, jax.tree.map(jnp.zeros_like, p),
                          (jax.tree.map(sp, bt), sp(m)))
    return out

  return fn, "local vmap"


def make_step(kind, loss_fn, b, opt):
  if kind == "nonprivate":
    def grads(p, bt, m):
      f = lambda p_: jnp.sum(jnp.where(m, loss_fn(p_, bt, None)[0], 0.0)) / b
      return jax.grad(f)(p)
  else:
    if kind in ("ghost", "ghost_nonoise"):
      gfn = ghost_clipped_grad(loss_fn, L2_CLIP, has_aux=True)
      clip = lambda p, bt, m: gfn(p, bt, m, None)[0]
    elif kind == "vmap":
      clip = vmap_clipped(loss_fn)[0]
    else:  # micro-batched vmap
      clip = vmap_clipped(loss_fn, microbatch_size=max(b // 8, 1))[0]

    def grads(p, bt, m, _clip=clip):
      g = _clip(p, bt, m)
      leaves, tdef = jax.tree.flatten(g)
      if kind == "ghost_nonoise":  # isolates clipping cost from sampling
        return jax.tree.unflatten(tdef, [x / b for x in leaves])
      keys = jax.random.split(jax.random.key(0), len(leaves))
      noisy = [(x + SIGMA * L2_CLIP * jax.random.normal(k, x.shape, x.dtype))
               / b for x, k in zip(leaves, keys)]
      return jax.tree.unflatten(tdef, noisy)

  def step(p, s, bt, m):
    g = grads(p, bt, m)
    upd, s = opt.update(g, s, p)
    return optax.apply_updates(p, upd), s

  return jax.jit(step)


def measure(step, params, opt_state, batch, mask, steps):
  compiled = step.lower(params, opt_state, batch, mask).compile()
  mem = None
  try:
    ma = compiled.memory_analysis()
    mem = int(ma.temp_size_in_bytes) if ma is not None else None
  except Exception:  # pylint: disable=broad-except
    pass
  p, s = params, opt_state
  for _ in range(2):
    p, s = compiled(p, s, batch, mask)
  jax.block_until_ready(p)
  times = []
  for _ in range(steps):
    t0 = time.perf_counter()
    p, s = compiled(p, s, batch, mask)
    jax.block_until_ready(p)
    times.append((time.perf_counter() - t0) * 1e3)
  stats = jax.devices()[0].memory_stats()
  peak = stats.get("peak_bytes_in_use") if stats else None
  return statistics.median(times), mem, peak


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workloads", default="a,b,c")
  ap.add_argument("--steps", type=int, default=10)
  ap.add_argument("--lm_vocab", type=int, default=8192)
  ap.add_argument("--methods",
                  default="nonprivate,vmap,micro_vmap,ghost,ghost_nonoise")
  args = ap.parse_args()
  for name in args.workloads.split(","):
    loss_fn, params, batch, b = workload(name, args.lm_vocab)
    mask = jnp.ones((b,), bool)
    opt = optax.adam(1e-3)
    opt_state = opt.init(params)
    res = {"benchmark": "dp_overhead", "workload": name, "batch": b,
           "steps": args.steps, "jax": jax.__version__,
           "device": jax.devices()[0].device_kind,
           "machine": platform.machine(),
           "num_params": int(sum(x.size for x in jax.tree.leaves(params)))}
    for kind in args.methods.split(","):
      step = make_step(kind, loss_fn, b, opt)
      ms, mem, peak = measure(step, params, opt_state, batch, mask,
                              args.steps)
      res[f"{kind}_ms"] = round(ms, 2)
      res[f"{kind}_temp_bytes"] = mem
      if peak is not None:
        res[f"{kind}_peak_bytes"] = peak
    base = res.get("nonprivate_ms")
    if base:
      for kind in args.methods.split(","):
        if kind != "nonprivate":
          res[f"{kind}_ratio"] = round(res[f"{kind}_ms"] / base, 3)
    if res.get("vmap_ms") and res.get("ghost_ms"):
      res["ghost_speedup_vs_vmap"] = round(res["vmap_ms"] / res["ghost_ms"], 2)
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
  main()
