"""jax-privacy vs trustjax: DP-SGD step time on dp_overhead.py's workloads.

Claim measured (issue #4 "Fast DP"): a trustjax DP-SGD step
(`clipped_grad(method="auto")` + `dpsgd`) is faster than jax-privacy's
`clipped_grad`, both as the DP / non-private ratio and in ms per DP step, in
the same process on the same machine.

  python benchmarks/peers/jax_privacy_vs_trustjax.py --workloads=a,b,c

jax-privacy lives in its OWN virtual environment, created by this script on
first use (`--venv`, default `~/.cache/trustjax/venv-jax-privacy`) with
`python -m venv` and `pip install jax-privacy==--jax_privacy_version` plus
jax, jaxlib, flax, optax and dp-accounting pinned to the versions of the
interpreter running this script (so both libraries run on the same XLA).
The script then re-runs itself inside that environment (`--inner`), with the
repository root on PYTHONPATH for trustjax and `benchmarks/dp_overhead.py`.
Nothing is installed into the calling environment.

Workloads and models: `benchmarks/dp_overhead.py` (imported): (a) MLP
784-512-512-10, B=256; (b) transformer classifier V=8192, d=128, 2 layers,
T=64, B=64; (c) GPT-2-shaped LM 6x384, T=128, B=16, V=--lm_vocab.

Arms (all plain SGD, lr --lr, clip C=1, noise multiplier 1, one fixed batch):
  jax_nonprivate     dp_overhead.make_step("nonprivate") with optax.sgd.
  jax_dp_auto        trustjax.privacy.clipped_grad(method="auto") +
                     trustjax.privacy.dpsgd(optax.sgd): trustjax's default.
  jax_privacy_vmap   jax_privacy.clipped_grad(loss, l2_clip_norm=C) (vmap of
                     per-example grads), then
                     jax_privacy.noise_addition.gaussian_privatizer(stddev=C
                     sigma), optax.scale(1/B), optax.sgd.
  jax_privacy_micro  the same with microbatch_size=B/8 (--micro_div).
Timing as in opacus_vs_trustjax.py: compile, --warmup steps, then --rounds
rounds running every arm --per_round times in a shuffled order; median ms.
Before timing, the clipped sums of jax-privacy and trustjax are compared on
the same parameters and batch (`clipped_sum_max_rel_diff`): both compute
sum_i min(1, C/||g_i||) g_i, so they must agree to float tolerance.
Prints one JSON line per workload with the keys of opacus_vs_trustjax.py
(`<arm>_ms`, `<arm>_iqr_ms`, `<arm>_ratio` = ms / jax_nonprivate_ms) and
`jax_dp_auto_over_jax_privacy_best_ms`,
`jax_dp_auto_ratio_over_jax_privacy_best_ratio`, `claim_met`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import time

_HERE = os.path.dirname(os.path.abspath(__file__))
_BENCH = os.path.dirname(_HERE)
_REPO = os.path.dirname(_BENCH)
_PINNED = ("jax", "jaxlib", "flax", "optax", "dp-accounting")


# --------------------------------------------------------------- outer side
def _pins() -> list[str]:
  from importlib import metadata  # pylint: disable=import-outside-toplevel
  pins = []
  for name in _PINNED:
    try:
      pins.append(f"{name}=={metadata.version(name)}")
    except metadata.PackageNotFoundError:
      pins.append(name)
  return pins


def ensure_venv(venv: str, jax_privacy_version: str) -> str:
  """Creates `venv` with jax-privacy if needed; returns its python."""
  py = os.path.join(venv, "bin", "python")
  marker = os.path.join(venv, f".jax_privacy_{jax_privacy_version}_ok")
  if os.path.exists(marker):
    return py
  if not os.path.exists(py):
    print(f"# creating {venv}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
  reqs = [f"jax-privacy=={jax_privacy_version}", *_pins()]
  print(f"# pip install {' '.join(reqs)}", file=sys.stderr, flush=True)
  r = subprocess.run([py, "-m", "pip", "install", "--disable-pip-version-"
                      "check", "-q", *reqs], check=False)
  if r.returncode:
    raise SystemExit(f"pip install {' '.join(reqs)} into {venv} failed "
                     f"(exit {r.returncode}); see pip's message above")
  open(marker, "w").close()
  return py


def outer(args, argv):
  py = ensure_venv(os.path.expanduser(args.venv), args.jax_privacy_version)
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join(
      [_REPO, _BENCH] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
  r = subprocess.run([py, os.path.abspath(__file__), "--inner", *argv],
                     env=env, check=False)
  raise SystemExit(r.returncode)


# --------------------------------------------------------------- inner side
def inner(args):
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import numpy as np  # pylint: disable=import-outside-toplevel
  import optax  # pylint: disable=import-outside-toplevel
  import jax_privacy  # pylint: disable=import-outside-toplevel
  from jax_privacy import noise_addition  # pylint: disable=import-outside-toplevel
  import dp_overhead  # pylint: disable=import-outside-toplevel
  from trustjax.privacy import clipped_grad  # pylint: disable=import-outside-toplevel
  from trustjax.privacy import dpsgd  # pylint: disable=import-outside-toplevel

  c, sigma = dp_overhead.L2_CLIP, dp_overhead.SIGMA

  def jp_clip(loss_fn, micro):
    # jax-privacy calls the loss on ONE example with a leading axis of 1.
    fun = lambda p, bt: jnp.sum(loss_fn(p, bt, None)[0])
    return jax_privacy.clipped_grad(fun, l2_clip_norm=c,
                                    microbatch_size=micro)

  def arm(kind, loss_fn, params, batch, b):
    mask = jnp.ones((b,), bool)
    if kind == "jax_nonprivate":
      opt = optax.sgd(args.lr)
      jstep = dp_overhead.make_step("nonprivate", loss_fn, b, opt)
    else:
      if kind == "jax_dp_auto":
        tj = clipped_grad(loss_fn, c, method="auto")
        grads = lambda p, bt, m: tj(p, bt, m, None)[0]
        opt = dpsgd(optax.sgd(args.lr), c, sigma, b, seed=0)
      else:
        micro = (max(b // args.micro_div, 1) if kind == "jax_privacy_micro"
                 else None)
        g_fn = jp_clip(loss_fn, micro)
        grads = lambda p, bt, m: g_fn(p, bt)   # fixed full batch: m all True
        opt = optax.chain(
            noise_addition.gaussian_privatizer(stddev=c * sigma, prng_key=0),
            optax.scale(1.0 / b), optax.sgd(args.lr))

      @jax.jit
      def jstep(p, s, bt, m):
        upd, s = opt.update(grads(p, bt, m), s, p)
        return optax.apply_updates(p, upd), s
    step, _, compile_s = dp_overhead.compile_step(
        jstep, params, opt.init(params), batch, mask)
    return step, compile_s

  def agreement(loss_fn, params, batch, b):
    ours = jax.jit(lambda p, bt: clipped_grad(loss_fn, c, method="auto")(
        p, bt, jnp.ones((b,), bool), None)[0])(params, batch)
    theirs = jax.jit(jp_clip(loss_fn, None))(params, batch)
    num = max(float(jnp.max(jnp.abs(x - y)))
              for x, y in zip(jax.tree.leaves(ours), jax.tree.leaves(theirs)))
    den = max(float(jnp.max(jnp.abs(y))) for y in jax.tree.leaves(theirs))
    return num / den

  meta = {"jax_privacy": jax_privacy.__version__, "jax": jax.__version__,
          "python": platform.python_version(), "cpu_count": os.cpu_count(),
          "machine": platform.machine(),
          "device": jax.devices()[0].device_kind,
          "xla_flags": os.environ.get("XLA_FLAGS", "")}
  for name in args.workloads.split(","):
    load0 = os.getloadavg()[0]
    loss_fn, params, batch, b = dp_overhead.workload(name, args.lm_vocab)
    rel = agreement(loss_fn, params, batch, b)
    arms, compile_s = {}, {}
    # Every arm uses the token-folded model (dp_overhead._dense, as
    # trustjax.models.dense): same function and params, the fastest JAX
    # formulation on XLA:CPU; both libraries' clipping handles it.
    loss_fold = dp_overhead.workload(name, args.lm_vocab, fold=True)[0]
    for kind in args.arms.split(","):
      arms[kind], compile_s[kind] = arm(kind, loss_fold, params, batch, b)
    for step in arms.values():
      for _ in range(args.warmup):
        step()
    times = {k: [] for k in arms}
    order, rnd = list(arms), random.Random(args.seed)
    t_start = time.perf_counter()
    for _ in range(args.rounds):
      rnd.shuffle(order)
      for k in order:
        for _ in range(args.per_round):
          t0 = time.perf_counter()
          arms[k]()
          times[k].append((time.perf_counter() - t0) * 1e3)
    res = {"benchmark": "jax_privacy_vs_trustjax", "workload": name,
           "batch": b,
           "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
           "timed_steps_per_arm": args.rounds * args.per_round,
           "clipped_sum_max_rel_diff": float(f"{rel:.2e}"),
           "timed_wall_s": round(time.perf_counter() - t_start, 1)}
    for k, v in times.items():
      res[f"{k}_ms"] = round(statistics.median(v), 2)
      res[f"{k}_iqr_ms"] = [round(float(x), 2)
                            for x in np.percentile(v, [25, 75])]
    for k, v in compile_s.items():
      res[f"{k}_compile_s"] = round(v, 2)
    base = res.get("jax_nonprivate_ms")
    if base:
      for k in arms:
        if k != "jax_nonprivate":
          res[f"{k}_ratio"] = round(res[f"{k}_ms"] / base, 3)
    peers = [k for k in arms if k.startswith("jax_privacy_")]
    if peers and "jax_dp_auto" in arms:
      best = min(peers, key=lambda k: res[f"{k}_ms"])
      res["jax_privacy_best_ms_mode"] = best
      res["jax_dp_auto_over_jax_privacy_best_ms"] = round(
          res["jax_dp_auto_ms"] / res[f"{best}_ms"], 3)
      if base:
        res["jax_dp_auto_ratio_over_jax_privacy_best_ratio"] = round(
            res["jax_dp_auto_ratio"] / res[f"{best}_ratio"], 3)
        res["claim_met"] = bool(
            res["jax_dp_auto_over_jax_privacy_best_ms"] < 1 and
            res["jax_dp_auto_ratio_over_jax_privacy_best_ratio"] < 1)
    res.update(meta)
    res["loadavg_1m_before_after"] = [round(load0, 2),
                                      round(os.getloadavg()[0], 2)]
    print(json.dumps(res), flush=True)


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workloads", default="a,b,c")
  ap.add_argument("--rounds", type=int, default=4)
  ap.add_argument("--per_round", type=int, default=1)
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument("--lm_vocab", type=int, default=8192)
  ap.add_argument("--lr", type=float, default=1e-3)
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--micro_div", type=int, default=8,
                  help="jax_privacy_micro uses microbatch_size=B/micro_div")
  ap.add_argument("--arms", default="jax_nonprivate,jax_dp_auto,"
                  "jax_privacy_vmap,jax_privacy_micro")
  ap.add_argument("--venv", default="~/.cache/trustjax/venv-jax-privacy")
  ap.add_argument("--jax_privacy_version", default="2.0.0")
  ap.add_argument("--inner", action="store_true",
                  help="run the benchmark in this interpreter (used by the "
                  "script itself inside the jax-privacy environment)")
  argv = sys.argv[1:]
  args = ap.parse_args(argv)
  if args.inner:
    inner(args)
  else:
    outer(args, argv)


if __name__ == "__main__":
  main()
