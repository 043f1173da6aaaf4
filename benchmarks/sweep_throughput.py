r"""K DP-SGD classifiers stacked in one program vs K sequential runs.

  TRUSTJAX_DATA_DIR=../shared/data python benchmarks/sweep_throughput.py \
      --models=16 --steps=60 --out=runs/sweep_throughput

Both arms train the same K configs of configs/dp_clinc150.py (real CLINC150,
bag-of-embeddings model, DP-SGD, Poisson sampling) that differ in noise
multiplier and learning rate, for the same number of steps: once one after
another with `classification.run`, once side by side with
`classification.run_stacked`. Timed: the whole job (data, calibration,
training, evaluation, checkpoints, metrics) and, separately, the training
loop as each job reports it (`train_seconds_this_run`). Both arms run in
the same process (sequential first). Also reports the largest test-accuracy
difference between the arms (float reassociation inside batched kernels can
flip a prediction at an argmax tie over many steps). Prints one JSON line
with both times and the ratios stacked / sequential.
"""

import argparse
import json
import os
import shutil
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trustjax.experiment import classification  # noqa: E402
from trustjax.experiment import load_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _configs(k, steps, accountant, batch_size, d_embed, vocab_size):
  sigmas = [0.8, 1.0, 1.3, 2.0]
  lrs = [0.01, 0.02, 0.05, 0.1]
  out = []
  for i in range(k):
    c = load_config(os.path.join(REPO, "configs", "dp_clinc150.py"))
    c.data.allow_synthetic = False
    c.num_steps = steps
    c.batch_size = batch_size
    c.log_every = max(1, steps // 4)
    c.checkpoint_every = steps
    c.seed = i
    c.dp.target_epsilon = None
    c.dp.noise_multiplier = sigmas[i % len(sigmas)]
    c.optimizer.learning_rate = lrs[(i // len(sigmas)) % len(lrs)]
    c.dp.accountant = accountant
    c.model.d_embed = d_embed
    c.data.vocab_size = vocab_size
    out.append(c)
  return out


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--models", type=int, default=16)
  ap.add_argument("--steps", type=int, default=60)
  ap.add_argument("--batch_size", type=int, default=256)
  ap.add_argument("--accountant", default="rdp")
  ap.add_argument("--d_embed", type=int, default=128)
  ap.add_argument("--vocab_size", type=int, default=8192)
  ap.add_argument("--out", default="runs/sweep_throughput")
  args = ap.parse_args()
  if not os.environ.get("TRUSTJAX_DATA_DIR"):
    sys.exit("set TRUSTJAX_DATA_DIR to the directory holding clinc150/")
  from launch.common import quiet_logs
  quiet_logs()
  shutil.rmtree(args.out, ignore_errors=True)
  configs = _configs(args.models, args.steps, args.accountant,
                     args.batch_size, args.d_embed, args.vocab_size)
  t0 = time.perf_counter()
  seq = [classification.run(c, os.path.join(args.out, f"seq{i}"))
         for i, c in enumerate(configs)]
  t_seq = time.perf_counter() - t0
  t0 = time.perf_counter()
  st = classification.run_stacked(
      configs, [os.path.join(args.out, f"stacked{i}")
                for i in range(len(configs))])
  t_st = time.perf_counter() - t0
  loop_seq = sum(s["train_seconds_this_run"] for s in seq)
  loop_st = st[0]["train_seconds_this_run"]
  # Stacked and separate programs agree to float reassociation; over many
  # steps that can flip a test prediction at an argmax tie.
  acc_diff = max(abs(a["test_accuracy"] - b["test_accuracy"])
                 for a, b in zip(seq, st))
  print(json.dumps({
      "benchmark": "sweep_throughput", "models": args.models,
      "steps": args.steps, "expected_batch_size": args.batch_size,
      "model": configs[0].model.name, "data": seq[0]["data"],
      "sequential_job_s": round(t_seq, 2), "stacked_job_s": round(t_st, 2),
      "job_ratio": round(t_st / t_seq, 3),
      "sequential_train_loop_s": round(loop_seq, 2),
      "stacked_train_loop_s": round(loop_st, 2),
      "train_loop_ratio": round(loop_st / loop_seq, 3),
      "max_test_accuracy_diff": acc_diff,
      "d_embed": args.d_embed, "vocab_size": args.vocab_size,
      "params_per_model": st[0].get("num_params"),
      "test_accuracy_range": [min(s["test_accuracy"] for s in st),
                              max(s["test_accuracy"] for s in st)]}))


if __name__ == "__main__":
  main()
