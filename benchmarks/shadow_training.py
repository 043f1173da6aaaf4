r"""K = 16 shadow models trained side by side vs 16 sequential runs.

  TRUSTJAX_DATA_DIR=../shared/data python benchmarks/shadow_training.py \
      --models=16 --epochs=2

What the audit job trains (`trustjax.experiment.audit_job`: the models of
`configs/audit_clinc150.py:small`, a transformer classifier on 3000 CLINC150
rows plus canaries, each model on its own random half, canary rows in all):
the K classification configs of one defence (`audit_job.model_configs`, the
same steps and batch shape for every model) trained by
`classification.run_stacked(train_masks=, data=)` in one program, against
`classification.run(config_k, train_mask=, data=)` called K times. Both arms
do the same per-model work besides training: setup (sigma calibrated per
model for DP; the calibration memo is cleared before each arm), one final
checkpoint, the final evaluation on each model's training rows and the
summary; metrics are logged at the last step only. Non-private and DP-SGD
(epsilon 1) arms, all in one process, sequential first. `--accountant=rdp`
shortens the (equal per model) setup; the training work is the same.
`--chunk_sizes=1,4` adds stacked arms that run the K models' step as
`lax.map` over chunks of that many vmapped models (`run_stacked(chunk_size=)`;
the audit job's DP defences use chunk_size 1 by default, `dp.chunk_size`).

Prints one JSON line: per arm the whole call's seconds (`*_s`), the training
loop's seconds (`*_loop_s`, the summaries' `train_seconds_this_run`,
summed over the sequential runs) and the ratios stacked / sequential.
"""

import argparse
import dataclasses
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from trustjax.experiment import audit_job  # noqa: E402
from trustjax.experiment import classification  # noqa: E402
from trustjax.experiment import load_config  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main():
  ap = argparse.ArgumentParser()
  ap.add_argument("--models", type=int, default=16)
  ap.add_argument("--epochs", type=float, default=2.0)
  ap.add_argument("--epsilons", default="inf,1")
  ap.add_argument("--accountant", default="pld",
                  help="pld (as the audit config) or rdp (faster setup)")
  ap.add_argument("--chunk_sizes", default="",
                  help="comma-separated lax.map chunk sizes to add as arms")
  args = ap.parse_args()
  if not os.environ.get("TRUSTJAX_DATA_DIR"):
    sys.exit("set TRUSTJAX_DATA_DIR to the directory holding clinc150/")
  c = load_config(os.path.join(REPO, "configs", "audit_clinc150.py"), "small")
  c.num_epochs = args.epochs
  c.num_models = args.models
  c.dp.accountant = args.accountant
  c.log_every = 10 ** 9          # log at the last step only
  c.checkpoint_every = 10 ** 9   # one (final) checkpoint per model
  data = audit_job.load_audit_data(c)
  masks = audit_job.membership_masks(c, data.owner)
  # Training rows only: the final evaluation is the models' own rows.
  enc = dataclasses.replace(data.encoded,
                            arrays={"train": data.encoded.arrays["train"]})
  chunks = [int(x) for x in args.chunk_sizes.split(",") if x]
  out = {"benchmark": "shadow_training", "models": args.models,
         "epochs": args.epochs, "model": c.model.name,
         "accountant": args.accountant,
         "train_rows": int(len(data.owner))}
  root = tempfile.mkdtemp(prefix="shadow_training_")
  try:
    for eps in [float(e) for e in args.epsilons.split(",")]:
      name = audit_job.defence_name(eps)
      configs = audit_job.model_configs(c, masks, eps)
      res = {"steps": configs[0].num_steps}
      classification._CALIBRATED.clear()
      t0 = time.perf_counter()
      loop = 0.0
      for k, mc in enumerate(configs):
        s = classification.run(mc, os.path.join(root, name, "seq", str(k)),
                               train_mask=masks[k], data=enc)
        loop += s["train_seconds_this_run"]
      res.update(sequential_s=round(time.perf_counter() - t0, 2),
                 sequential_loop_s=round(loop, 2))
      for chunk in [None] + chunks:
        arm = "stacked" if chunk is None else f"stacked_chunk{chunk}"
        classification._CALIBRATED.clear()
        t0 = time.perf_counter()
        s = classification.run_stacked(
            configs, [os.path.join(root, name, arm, str(k))
                      for k in range(len(configs))],
            train_masks=list(masks), data=enc,
            **({} if chunk is None else {"chunk_size": chunk}))
        t = time.perf_counter() - t0
        res.update({f"{arm}_s": round(t, 2),
                    f"{arm}_loop_s": s[0]["train_seconds_this_run"],
                    f"{arm}_ratio": round(t / res["sequential_s"], 3),
                    f"{arm}_loop_ratio": round(
                        s[0]["train_seconds_this_run"] / loop, 3)})
      out[name] = res
      print(json.dumps({name: res}), file=sys.stderr, flush=True)
  finally:
    shutil.rmtree(root, ignore_errors=True)
  print(json.dumps(out))


if __name__ == "__main__":
  main()
