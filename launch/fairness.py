r"""Intrinsic vs extrinsic bias of a set of GPT-2 models, and their agreement.

  python -m launch.fairness --config=configs/fairness_gender.py \
      --config.models="('runs/distill_a/model','runs/distill_b/model')" \
      --workdir=runs/fairness

The job (what is measured and written) is documented in
`trustjax/experiment/fairness_job.py`; real data comes from
`config.data_dir` or TRUSTJAX_DATA_DIR.
"""

import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from trustjax.experiment import fairness_job

_CONFIG = config_flags.DEFINE_config_file("config",
                                          "configs/fairness_gender.py")
_WORKDIR = flags.DEFINE_string("workdir", "runs/fairness", "Output dir.")
_OVERWRITE = flags.DEFINE_bool("overwrite", False, "Replace the workdir.")


def main(argv):
  del argv
  try:
    out = fairness_job.run(_CONFIG.value, _WORKDIR.value,
                           overwrite=_OVERWRITE.value)
  except (ValueError, FileNotFoundError) as e:
    sys.exit(f"error: {e}")
  print(out["table"], flush=True)


if __name__ == "__main__":
  app.run(main)
