r"""Intrinsic (CEAT) vs extrinsic (probe gaps, counterfactual gap, generation
polarity) gender bias across GPT-2 models, and their rank correlation.

Command (from the repository root; models are HF-format GPT-2 dirs, e.g. the
distillation variants written by `launch.distill`):

  python -m launch.fairness --config=configs/fairness_gender.py \
      --config.models="('runs/teacher/model','runs/student_cda/model')" \
      --workdir=runs/fairness_gender

Variants: `configs/fairness_gender.py:smoke` trains three tiny GPT-2s itself
(two without and one with counterfactual data augmentation) on BOLD gender
sentences and runs everything at toy sizes (about a minute on 2 CPU cores).
Data: `$TRUSTJAX_DATA_DIR` (or `data_dir`) holding bold/ and weat/.
Outputs in the workdir: results.json, table.md, scatter.png.
"""

import ml_collections


def get_config(arg: str | None = None):
  c = ml_collections.ConfigDict()
  c.models = ()                    # checkpoint dirs, >= 2
  c.data_dir = ""                  # "" -> $TRUSTJAX_DATA_DIR
  c.max_len = 64
  c.ceat = ml_collections.ConfigDict(dict(
      tests=("weat6", "weat7", "weat8"), max_per_word=200,
      num_samples=10000, on_missing="skip"))
  c.task = ml_collections.ConfigDict(dict(num_classes=18, max_rows=4000))
  c.probe_steps = 300
  c.generation = ml_collections.ConfigDict(dict(num_prompts=200,
                                                max_new_tokens=20))
  c.smoke_models = ()              # "name:plain|cda:seed" -> train tiny GPT-2s
  c.smoke_steps = 0
  c.smoke_width = 32
  if arg in (None, "", "default"):
    pass
  elif arg == "smoke":
    c.smoke_models = ("plain0:plain:0", "cda0:cda:0", "plain1:plain:1")
    c.smoke_steps = 30
    c.max_len = 32
    c.ceat.tests = ("weat8",)
    c.ceat.max_per_word = 6
    c.ceat.num_samples = 200
    c.task = ml_collections.ConfigDict(dict(num_classes=18, max_rows=200))
    c.probe_steps = 30
    c.generation = ml_collections.ConfigDict(dict(num_prompts=4,
                                                  max_new_tokens=4))
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/fairness_gender.py;"
                     " valid: default, smoke")
  return c
