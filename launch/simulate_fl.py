r"""Federated learning simulation (vectorised client cohorts).

  python -m launch.simulate_fl --config=configs/fl_clinc150.py --workdir=runs/fl
  python -m launch.simulate_fl --config=configs/fl_shakespeare.py \
      --workdir=runs/fl_shakespeare

CLINC150 intent classification over partitioned clients, or next-character
prediction on Tiny Shakespeare with one client per speaker (see
`trustjax/experiment/federated_job.py`). Per-round metrics go to
metrics.jsonl; evaluation on held-out clients gives the distribution of
per-client accuracy; checkpoints resume exactly.

Many hosts (one process per host, workdir on a shared file system; see
trustjax/experiment/multihost.py), on host i of P:

  python -m launch.simulate_fl --config=configs/fl_clinc150.py \
      --config.fl.num_devices=<devices of all hosts> --workdir=/shared/fl \
      --coordinator_address=host0:1234 --num_processes=P --process_id=i
  (or --multihost on SLURM / Open MPI / Cloud TPU)
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import common
from trustjax.experiment import classification
from trustjax.experiment import federated_job
from trustjax.experiment import multihost

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/fl_clinc150.py", "FL config file.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/fl", "Output directory.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a workdir that holds a different config.")
common.define_multihost_flags()


def main(argv):
  del argv
  common.init_distributed()
  common.quiet_logs()
  try:
    summary = federated_job.run(_CONFIG.value, _WORKDIR.value,
                                overwrite=_OVERWRITE.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  if not multihost.is_main_process():
    return
  print("\nfederated simulation finished:\n" +
        classification.format_summary(summary), flush=True)


if __name__ == "__main__":
  app.run(main)
