r"""Privacy-utility curve of DP-SGD on real CLINC150.

  TRUSTJAX_DATA_DIR=../shared/data python benchmarks/privacy_utility.py \
      --epsilons=1,2,4,8 --learning_rates=0.01,0.02,0.05 --out=runs/privacy_utility

For each target epsilon (delta = 1/n^1.1) and each learning rate, trains the
bag-of-embeddings classifier of configs/dp_clinc150.py with DP-SGD, and the
same model non-privately with the same batch size and steps. The learning rate
reported per epsilon is the one with the best VALIDATION in-scope accuracy
(test accuracy is reported for that choice only; note that tuning on the
validation split is not itself accounted). Prints one JSON line and writes
`privacy_utility.png` and `privacy_utility.json` under --out.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trustjax.experiment import classification  # noqa: E402
from trustjax.experiment import load_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _load(name, variant=None):
  return load_config(os.path.join(REPO, "configs", f"{name}.py"), variant)


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--epsilons", default="1,2,4,8")
  ap.add_argument("--learning_rates", default="0.01,0.02,0.05")
  ap.add_argument("--epochs", type=float, default=30.0)
  ap.add_argument("--out", default="runs/privacy_utility")
  args = ap.parse_args()
  if not os.environ.get("TRUSTJAX_DATA_DIR"):
    sys.exit("set TRUSTJAX_DATA_DIR to the directory holding clinc150/")
  eps_list = [float(e) for e in args.epsilons.split(",")]
  lrs = [float(x) for x in args.learning_rates.split(",")]
  results = {"epsilon": {}, "nonprivate": None}
  t0 = time.time()
  for eps in eps_list + [None]:
    best = None
    for lr in lrs:
      cfg = _load("dp_clinc150")
      cfg.data.allow_synthetic = False
      cfg.num_epochs = args.epochs
      cfg.optimizer.learning_rate = lr
      cfg.log_every = 50
      if eps is None:
        cfg.dp.enabled = False
        cfg.dp.target_epsilon = None
        tag = f"nonprivate_lr{lr}"
        # Same steps as the DP runs: num_epochs * n / expected batch.
      else:
        cfg.dp.target_epsilon = eps
        tag = f"eps{eps}_lr{lr}"
      s = classification.run(cfg, os.path.join(args.out, tag), overwrite=True)
      row = {"lr": lr, "val_in_scope_accuracy": s["val_in_scope_accuracy"],
             "test_in_scope_accuracy": s["test_in_scope_accuracy"],
             "test_accuracy": s["test_accuracy"], "steps": s["steps"],
             "epsilon": s.get("epsilon"),
             "noise_multiplier": s.get("noise_multiplier"),
             "delta": s.get("delta")}
      print(json.dumps({"run": tag, **row}), file=sys.stderr, flush=True)
      if best is None or row["val_in_scope_accuracy"] > \
          best["val_in_scope_accuracy"]:
        best = row
    if eps is None:
      results["nonprivate"] = best
    else:
      results["epsilon"][str(eps)] = best
  results["seconds"] = round(time.time() - t0, 1)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(args.out, "privacy_utility.json"), "w") as f:
    json.dump(results, f, indent=2)
  from trustjax.experiment import line_plot
  xs = eps_list
  line_plot(os.path.join(args.out, "privacy_utility.png"), xs,
            {"DP-SGD (in-scope test acc.)":
                 [results["epsilon"][str(e)]["test_in_scope_accuracy"]
                  for e in xs],
             "non-private": [results["nonprivate"]["test_in_scope_accuracy"]]
             * len(xs)},
            xlabel="epsilon (delta = 1/n^1.1)", ylabel="accuracy",
            title="CLINC150: privacy-utility", logx=True)
  print(json.dumps({"benchmark": "privacy_utility", **results}))


if __name__ == "__main__":
  main()
