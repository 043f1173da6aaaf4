r"""Privacy audit of CLINC150 intent classifiers: membership inference (global
threshold, LiRA online/offline), empirical epsilon, canary exposure and
white-box canary extraction, non-private and at several epsilons.

Command (from the repository root):

  python -m launch.audit --config=configs/audit_clinc150.py --workdir=runs/audit

Variants: `:smoke` (seconds; for tests), `:small` (a 3000-example subset of
the training split, K=8 models per defence; ~15-25 min on a 2-core CPU),
default (the full 15000-example training split; hours on a 2-core CPU).
Output: report.md (tables), report.json, <defence>/roc.png, exposure.png,
extraction.png in the workdir.
Data: `$TRUSTJAX_DATA_DIR/clinc150/data_full.json` (or the public download).
"""

from trustjax.experiment.audit_job import base_config


def get_config(arg: str | None = None):
  config = base_config()
  if arg in (None, "", "default"):
    pass
  elif arg == "small":
    config.data.max_train = 3000
    config.data.max_len = 24
    config.num_epochs = 30.0
  elif arg == "smoke":
    config.data.max_train = 200
    config.data.max_len = 16
    config.data.vocab_size = 1024
    config.model.d_model = 16
    config.model.d_ff = 32
    config.num_models = 6
    config.num_epochs = 1.0
    config.epsilons = (float("inf"), 4.0)
    config.dp.accountant = "rdp"
    # B = n_k + 1: no truncation term in the (RDP) accounting, which would
    # triple its cost; log only at the end (each log computes K epsilons).
    config.dp.max_batch_size = 10 ** 6
    config.log_every = 10 ** 6
    config.canary.template = "my pin code is {d} {d} {d}"
    config.canary.repetitions = (0, 4)
    config.canary.per_count = 1
    config.canary.exposure_sample = 100
    config.audit.inversion_models = 1
    config.audit.inversion_restarts = 2
    config.audit.inversion_steps = 10
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/audit_clinc150.py; "
                     "valid: default, small, smoke")
  return config
