r"""Privacy-utility curve of DP-SGD on real CLINC150.

  TRUSTJAX_DATA_DIR=../shared/data python benchmarks/privacy_utility.py \
      --variant=dp_words --epsilons=1,2,4,8 --learning_rates=0.015,0.02,0.03 \
      --vocab_epsilons=1:0.5,2:1,4:2,8:4 --out=runs/privacy_utility \
      --plot=benchmarks/results/privacy_utility_clinc150.png

For each target epsilon (the job's TOTAL epsilon at delta = 1/n^1.1), each
learning rate and each seed, trains the bag-of-embeddings classifier of
`configs/dp_clinc150.py:<variant>` with DP-SGD, and the same model
non-privately with the same batch size, steps and tokenizer. The (learning
rate, seed) runs of one target share one stacked program
(`classification.run_stacked`); rows report the mean over seeds. With a
`dp_words` variant the word vocabulary is a DP release of the training split
(`trustjax.privacy.dp_vocabulary` at the vocabulary epsilon given per target by
--vocab_epsilons), composed into the reported epsilon; with the default
variant the tokenizer is the public hashed GPT-2 BPE. The non-private row uses
the vocabulary of the largest target's setting.

Hyperparameters are chosen on the VALIDATION split only: the learning rate
reported per row is the one with the best mean validation in-scope accuracy,
and test accuracy is read for that choice only (this tuning on private
validation data is not itself accounted). Prints one JSON line and writes
`privacy_utility.json` under --out and the plot at --plot.
"""

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from launch.common import quiet_logs  # noqa: E402
from trustjax.experiment import classification  # noqa: E402
from trustjax.experiment import line_plot  # noqa: E402
from trustjax.experiment import load_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(variant, *, eps, lr, epochs, vocab_eps, accountant):
  cfg = load_config(os.path.join(REPO, "configs", "dp_clinc150.py"),
                    variant or None)
  cfg.data.allow_synthetic = False
  if epochs:
    cfg.num_epochs = epochs
  cfg.optimizer.learning_rate = lr
  cfg.log_every = 10 ** 6       # epsilon (a PLD call) only at the last step
  cfg.dp.accountant = accountant
  if vocab_eps is not None:
    cfg.data.vocab_epsilon = vocab_eps
  if eps is None:
    cfg.dp.enabled = False
    cfg.dp.target_epsilon = None
  else:
    cfg.dp.target_epsilon = eps
  return cfg


def _pairs(text):
  """'1:0.25,8:2' -> {1.0: 0.25, 8.0: 2.0}."""
  out = {}
  for item in filter(None, text.split(",")):
    k, v = item.split(":")
    out[float(k)] = float(v)
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--variant", default="dp_words",
                  help="variant of configs/dp_clinc150.py ('' = default)")
  ap.add_argument("--epsilons", default="1,2,4,8")
  ap.add_argument("--learning_rates", default="0.015,0.02,0.03")
  ap.add_argument("--vocab_epsilons", default="1:0.5,2:1,4:2,8:4",
                  help="target epsilon -> vocabulary epsilon (dp_words)")
  ap.add_argument("--epochs", type=float, default=0.0,
                  help="epochs per run (0: the variant's own)")
  ap.add_argument("--seeds", default="0",
                  help="seeds per (target, lr); rows report their mean")
  ap.add_argument("--accountant", default="pld")
  ap.add_argument("--out", default="runs/privacy_utility")
  ap.add_argument("--plot",
                  default="benchmarks/results/privacy_utility_clinc150.png")
  args = ap.parse_args()
  if not os.environ.get("TRUSTJAX_DATA_DIR"):
    sys.exit("set TRUSTJAX_DATA_DIR to the directory holding clinc150/")
  quiet_logs()
  eps_list = [float(e) for e in args.epsilons.split(",")]
  lrs = [float(x) for x in args.learning_rates.split(",")]
  vocab_eps = _pairs(args.vocab_epsilons)
  seeds = [int(x) for x in args.seeds.split(",")]
  dp_words = _config(args.variant, eps=8.0, lr=lrs[0], epochs=args.epochs,
                     vocab_eps=None, accountant=args.accountant
                     ).data.tokenizer == "dp_words"
  if dp_words and not set(eps_list) <= set(vocab_eps):
    sys.exit(f"--vocab_epsilons={args.vocab_epsilons} lacks a vocabulary "
             f"epsilon for some of --epsilons={args.epsilons}")
  results = {"variant": args.variant or "default",
             "epochs": args.epochs or _config(
                 args.variant, eps=8.0, lr=lrs[0], epochs=0, vocab_eps=None,
                 accountant=args.accountant).num_epochs,
             "learning_rates": lrs, "seeds": seeds, "accountant": args.accountant,
             "selection": "learning rate with the best validation in-scope "
                          "accuracy (mean over seeds); test read for that "
                          "choice only",
             "epsilon": {}, "nonprivate": None, "runs": []}
  t0 = time.time()
  for eps in eps_list + [None]:
    v_eps = None
    if dp_words:
      v_eps = vocab_eps[max(eps_list) if eps is None else eps]
    # One stacked program per target: every (learning rate, seed) pair.
    cfgs, tags = [], []
    for lr in lrs:
      for seed in seeds:
        cfg = _config(args.variant, eps=eps, lr=lr, epochs=args.epochs,
                      vocab_eps=v_eps, accountant=args.accountant)
        cfg.seed = seed
        cfgs.append(cfg)
        tags.append((f"nonprivate" if eps is None else f"eps{eps}")
                    + f"_lr{lr}_seed{seed}")
    t1 = time.time()
    summaries = classification.run_stacked(
        cfgs, [os.path.join(args.out, t) for t in tags], overwrite=True)
    wall = round(time.time() - t1, 1)
    best = None
    for i, lr in enumerate(lrs):
      runs = summaries[i * len(seeds):(i + 1) * len(seeds)]
      s0, cfg = runs[0], cfgs[i * len(seeds)]
      row = {"run": tags[i * len(seeds)].rsplit("_seed", 1)[0],
             "target_epsilon": eps, "lr": lr, "seeds": seeds,
             "vocab_epsilon": v_eps, "vocab_words": s0.get("vocab_words"),
             "steps": s0["steps"], "batch_size": cfg.batch_size,
             "epsilon": s0.get("epsilon"),
             "noise_multiplier": s0.get("noise_multiplier"),
             "delta": s0.get("delta"), "tokenizer": s0["tokenizer"],
             "wall_seconds_all_lrs": wall}
      for key in ("val_in_scope_accuracy", "test_in_scope_accuracy",
                  "test_accuracy"):
        row[key + "_per_seed"] = [r[key] for r in runs]
        row[key] = round(sum(r[key] for r in runs) / len(runs), 4)
      results["runs"].append(row)
      print(json.dumps(row), file=sys.stderr, flush=True)
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
  if os.path.dirname(args.plot):
    os.makedirs(os.path.dirname(args.plot), exist_ok=True)
  delta = results["epsilon"][str(eps_list[0])]["delta"]
  line_plot(args.plot, eps_list,
            {"DP-SGD (test in-scope acc.)":
                 [results["epsilon"][str(e)]["test_in_scope_accuracy"]
                  for e in eps_list],
             "non-private, same model and steps":
                 [results["nonprivate"]["test_in_scope_accuracy"]]
                 * len(eps_list)},
            xlabel=f"total epsilon (delta = {delta:.2g})",
            ylabel="in-scope test accuracy",
            title=f"CLINC150 privacy-utility ({results['variant']})",
            logx=True)
  print(json.dumps({"benchmark": "privacy_utility",
                    **{k: v for k, v in results.items() if k != "runs"}}))


if __name__ == "__main__":
  main()
