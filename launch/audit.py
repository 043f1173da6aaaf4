r"""Privacy audit job: shadow models, membership inference, empirical epsilon,
canary exposure and extraction; report.md + PNG plots in the workdir.

  python -m launch.audit --config=configs/audit_clinc150.py:small \
      --workdir=runs/audit_small

Every option lives in the config, e.g. `--config.epsilons='(1e999, 1.0)'`
(1e999 parses as inf: non-private) or `--config.num_models=16`. A
workdir holding a different config is refused unless `--overwrite`; a rerun
with the same config reuses the defences already finished and resumes the
unfinished one from its models' checkpoints (`<defence>/models/<k>`), exactly.
The job itself is `trustjax.experiment.audit_job`.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/audit_clinc150.py", "Audit config file.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/audit", "Output directory.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a workdir that holds a different config.")


def main(argv):
  del argv
  from trustjax.experiment import audit_job as job
  common.quiet_logs()
  try:
    job.run(_CONFIG.value, _WORKDIR.value, overwrite=_OVERWRITE.value,
            log=lambda msg: print(msg, flush=True))
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  with open(f"{_WORKDIR.value}/report.md") as f:
    print("\n" + f.read(), flush=True)


if __name__ == "__main__":
  app.run(main)
