r"""Why stacking large models pays less: one step, single vs K stacked.

  TRUSTJAX_DATA_DIR=../shared/data python benchmarks/stacked_step.py --models=16

For the classification job's bag model (configs/dp_clinc150.py, real
CLINC150, one Poisson batch) times, in one process: the jitted single-model
step (`classification._hp_step`, non-private and DP with ghost clipping),
the same step `jit(vmap)`-ed over K identical models, and
`jit(lax.map(step, batch_size=c))` for c in 1, 2, 4; plus `optax.adam`'s
update alone on one [V, D] embedding table vs K stacked. Prints one JSON
line of per-model milliseconds and ratios (stacked per model / single).
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import optax  # noqa: E402

from trustjax import sweeps  # noqa: E402
from trustjax.experiment import classification as C  # noqa: E402
from trustjax.experiment import load_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _time(fn, *args, repeats):
  jax.block_until_ready(fn(*args))
  t0 = time.perf_counter()
  for _ in range(repeats):
    out = fn(*args)
  jax.block_until_ready(out)
  return (time.perf_counter() - t0) / repeats * 1e3


def _arm(cfg, data, private, k, repeats):
  params, loss_fn, _ = C._build(cfg, data)
  train = data.arrays["train"]
  n = len(train["label"])
  priv = C.resolve_privacy(cfg, n, 10)
  priv.clip = cfg.dp.l2_clip
  idx, m = priv.sampler.batch(0)
  if not private:
    priv = None
  hp = C._hparams(cfg, priv)
  tx = C._tx(cfg, {a: float(b) for a, b in hp.items()}, priv, key=0)
  state = {"params": params, "opt_state": tx.init(params)}
  step = C._hp_step(cfg, loss_fn, priv, cfg.dp.l2_clip if private else None)
  batch = C._gather(train, idx, m)
  key = jax.random.key(0)
  single = _time(jax.jit(step), state, hp, batch, m, key, repeats=repeats)
  args = (sweeps.stack([state] * k), sweeps.stack([hp] * k),
          {a: np.stack([b] * k) for a, b in batch.items()},
          np.stack([m] * k), jnp.stack([key] * k))
  out = {"single_ms": round(single, 2)}
  vm = _time(jax.jit(jax.vmap(step)), *args, repeats=max(1, repeats // 3))
  out["vmap_per_model_ratio"] = round(vm / k / single, 2)
  for c in (1, 2, 4):
    fm = jax.jit(lambda *a, c=c: jax.lax.map(lambda x: step(*x), a,
                                             batch_size=c))
    t = _time(fm, *args, repeats=max(1, repeats // 3))
    out[f"lax_map{c}_per_model_ratio"] = round(t / k / single, 2)
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--models", type=int, default=16)
  ap.add_argument("--repeats", type=int, default=6)
  args = ap.parse_args()
  if not os.environ.get("TRUSTJAX_DATA_DIR"):
    sys.exit("set TRUSTJAX_DATA_DIR to the directory holding clinc150/")
  cfg = load_config(os.path.join(REPO, "configs", "dp_clinc150.py"))
  cfg.data.allow_synthetic = False
  cfg.batch_size = 256
  cfg.num_steps = 10
  cfg.dp.target_epsilon = None
  cfg.dp.noise_multiplier = 1.0
  cfg.dp.accountant = "rdp"
  data = C.load_data(cfg)
  k = args.models
  res = {"benchmark": "stacked_step", "models": k,
         "nonprivate": _arm(cfg, data, False, k, args.repeats),
         "dp_ghost": _arm(cfg, data, True, k, args.repeats)}
  v, d = cfg.data.vocab_size, cfg.model.d_embed
  opt = optax.adam(1e-3)
  p = jnp.ones((v, d))
  upd = jax.jit(opt.update)
  single = _time(upd, p, opt.init(p), p, repeats=args.repeats)
  ps = jnp.ones((k, v, d))
  stacked = _time(jax.jit(jax.vmap(opt.update)), ps,
                  jax.vmap(opt.init)(ps), ps,
                  repeats=max(1, args.repeats // 3))
  res["adam_embedding"] = {"single_ms": round(single, 2),
                           "stacked_per_model_ms": round(stacked / k, 2),
                           "ratio": round(stacked / k / single, 2)}
  print(json.dumps(res))


if __name__ == "__main__":
  main()
