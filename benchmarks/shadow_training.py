r"""K = 16 shadow models trained side by side vs 16 sequential runs.

  TRUSTJAX_DATA_DIR=../shared/data python benchmarks/shadow_training.py \
      --models=16 --epochs=2

The auditing job's training (`trustjax.audit.job.train_group`: the shadow
models of `configs/audit_clinc150.py:small`, a transformer classifier on
3000 CLINC150 rows plus canaries, each model on its own random half) for K
models in one program (`sweeps.vmap_train`), against the same function
called K times with one model each (the same per-model work and shapes; the
sequential arm's models all start from the same initialisation, which does
not change the work). Non-private and DP-SGD (epsilon 1) arms, all in one
process, sequential first. Prints one JSON line with the times and ratios.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trustjax.audit import job  # noqa: E402
from trustjax.experiment import load_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--models", type=int, default=16)
  ap.add_argument("--epochs", type=float, default=2.0)
  ap.add_argument("--epsilons", default="inf,1")
  args = ap.parse_args()
  if not os.environ.get("TRUSTJAX_DATA_DIR"):
    sys.exit("set TRUSTJAX_DATA_DIR to the directory holding clinc150/")
  c = load_config(os.path.join(REPO, "configs", "audit_clinc150.py"), "small")
  c.num_epochs = args.epochs
  c.num_models = args.models
  data = job.load_audit_data(c)
  masks = job.membership_masks(c, data.owner)
  quiet = lambda *a, **k: None  # noqa: E731
  out = {"benchmark": "shadow_training", "models": args.models,
         "epochs": args.epochs, "model": c.model.name,
         "train_rows": int(len(data.owner))}
  for eps in [float(e) for e in args.epsilons.split(",")]:
    name = job.defence_name(eps)
    one = c.copy_and_resolve_references()
    one.num_models = 1
    t0 = time.perf_counter()
    for k in range(args.models):
      job.train_group(one, data, masks[k:k + 1], eps, log=quiet)
    t_seq = time.perf_counter() - t0
    t0 = time.perf_counter()
    _, _, _, info = job.train_group(c, data, masks, eps, log=quiet)
    t_st = time.perf_counter() - t0
    out[name] = {"sequential_s": round(t_seq, 2), "stacked_s": round(t_st, 2),
                 "ratio": round(t_st / t_seq, 3), "steps": info["steps"]}
  print(json.dumps(out))


if __name__ == "__main__":
  main()
