r"""Data-parallel clipped gradients: ghost ("auto") vs vmap under shard_map.

  python benchmarks/dp_sharded.py --workloads=a,b --devices=8 --rounds=5

For each workload of `dp_overhead.py` ((a) MLP 784-512-512-10 at batch 256,
(b) transformer classifier at batch 64), times the clipped-gradient sum of
`trustjax.privacy.make_dp_grad_fn(clipped_grad(loss, 1.0, method=m), mesh)`
over a ("data",) mesh of `--devices` simulated CPU devices, for m = "vmap"
and m = "auto" (ghost / book-keeping), jitted, in the same process. Each
round times `--steps` calls of each method back to back (method order
alternating between rounds), so load from other processes hits both alike;
prints one JSON line per workload with the median ms and the per-round
ratio vmap / auto. Before timing it checks that both give the same sum
(max relative difference reported). On one host the simulated devices share
the CPU cores: this measures the cost of the clipping method under
shard_map, not a multi-device speedup.
"""

import argparse
import json
import os
import sys
import time

import jax


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--workloads", default="a,b")
  ap.add_argument("--devices", type=int, default=8)
  ap.add_argument("--rounds", type=int, default=5)
  ap.add_argument("--steps", type=int, default=3)
  args = ap.parse_args()
  jax.config.update("jax_num_cpu_devices", args.devices)
  import numpy as np
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  from dp_overhead import workload
  from trustjax.privacy import clipped_grad
  from trustjax.privacy import make_dp_grad_fn

  mesh = jax.make_mesh((args.devices,), ("data",))
  for name in args.workloads.split(","):
    loss_fn, params, batch, b = workload(name, 8192, fold=True)
    mask = np.ones((b,), bool)
    fns = {m: jax.jit(make_dp_grad_fn(clipped_grad(loss_fn, 1.0, method=m),
                                      mesh))
           for m in ("vmap", "auto")}
    sums = {m: jax.block_until_ready(f(params, batch, mask, None))[0]
            for m, f in fns.items()}
    diff = max(float(np.max(np.abs(np.asarray(a) - np.asarray(v))) /
                     (np.max(np.abs(np.asarray(v))) + 1e-30))
               for a, v in zip(jax.tree.leaves(sums["auto"]),
                               jax.tree.leaves(sums["vmap"])))
    times = {m: [] for m in fns}
    for r in range(args.rounds):
      for m in (("vmap", "auto") if r % 2 == 0 else ("auto", "vmap")):
        t0 = time.perf_counter()
        for _ in range(args.steps):
          out = fns[m](params, batch, mask, None)
        jax.block_until_ready(out)
        times[m].append((time.perf_counter() - t0) / args.steps * 1e3)
    print(json.dumps({
        "workload": name, "devices": args.devices, "batch": b,
        "vmap_ms": round(float(np.median(times["vmap"])), 2),
        "auto_ms": round(float(np.median(times["auto"])), 2),
        "vmap_over_auto": round(float(np.median(times["vmap"]) /
                                      np.median(times["auto"])), 2),
        "vmap_over_auto_per_round": [round(v / a, 2) for v, a in
                                     zip(times["vmap"], times["auto"])],
        "max_rel_diff_of_sums": diff, "load": os.getloadavg()[0]}),
          flush=True)


if __name__ == "__main__":
  main()
