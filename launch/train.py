r"""Non-private text-classification training.

  python -m launch.train --config=configs/clinc150.py --workdir=runs/clinc150

Every option lives in the config and can be overridden, e.g.
`--config.optimizer.learning_rate=0.01`. A workdir holding a different config
is refused unless `--overwrite`; a rerun with the same config resumes.
"""

from absl import app
from absl import flags
from ml_collections import config_flags

from launch import common

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/clinc150.py", "Training config file.")
_WORKDIR = flags.DEFINE_string("workdir", "runs/train", "Output directory.")
_OVERWRITE = flags.DEFINE_bool(
    "overwrite", False, "Replace a workdir that holds a different config.")


def main(argv):
  del argv
  common.run_classification(_CONFIG.value, _WORKDIR.value, _OVERWRITE.value,
                            expect_dp=False)


if __name__ == "__main__":
  app.run(main)
