r"""DP-SGD text-classification training with privacy accounting.

  python -m launch.train_dp --config=configs/dp_clinc150.py --workdir=runs/dp8
  python -m launch.train_dp --config=configs/dp_clinc150.py \
      --config.dp.target_epsilon=2 --workdir=runs/dp2

The noise multiplier is calibrated to `dp.target_epsilon` (or taken from
`dp.noise_multiplier`, epsilon then reported) for the Poisson sampling and the
steps actually run. metrics.jsonl carries epsilon on every logged step; the
checkpoints carry the optimizer, noise RNG and sampler/accountant state, so a
killed run resumes exactly.

Many hosts (one process per host, workdir on a shared file system; see
trustjax/experiment/multihost.py), on host i of P:

  python -m launch.train_dp --config=configs/dp_clinc150.py \
      --config.dp.num_devices=<devices of all hosts> --workdir=/shared/dp8 \
      --coordinator_address=host0:1234 --num_processes=P --process_id=i
  (or --multihost on SLURM / Open MPI / Cloud TPU)

Each batch is sharded over every device; the noise is drawn once.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/dp_clinc150.py", "DP training config file.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/train_dp",
                               "Output directory.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a workdir that holds a different config.")
common.define_multihost_flags()


def main(argv):
  del argv
  common.init_distributed()
  common.run_classification(_CONFIG.value, _WORKDIR.value, _OVERWRITE.value,
                            expect_dp=True)


if __name__ == "__main__":
  app.run(main)
