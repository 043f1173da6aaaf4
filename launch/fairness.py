r"""Intrinsic vs extrinsic bias of a set of GPT-2 models, and their agreement.

  python -m launch.fairness --config=configs/fairness_gender.py \
      --config.models="('runs/distill_a/model','runs/distill_b/model')" \
      --workdir=runs/fairness

For each model (HF-format GPT-2 dirs from `config.models`; the `smoke`
variant trains tiny ones itself, with and without counterfactual data
augmentation):
- intrinsic: CEAT (Guo & Caliskan 2021) combined effect sizes of the gender
  tests (`config.ceat.tests`) on contextual embeddings from BOLD Wikipedia;
- extrinsic: a linear probe trained on the model's mean-pooled final hidden
  states for BOLD profession classification; its equalized-odds and
  demographic-parity differences between male- and female-word sentences
  (one-vs-rest, worst class) and its counterfactual token fairness gap
  (gendered words swapped); generation polarity disparity on BOLD gender
  prompts (`config.generation.num_prompts` > 0).
Writes `results.json` (rows and Spearman rank correlations across models of
every intrinsic x extrinsic pair), `table.md` and `scatter.png`.
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
