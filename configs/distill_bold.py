r"""Counterfactual distillation of a small GPT-2 on BOLD + Tiny Shakespeare.

Teacher first (plain LM training), then the students (half its depth,
initialised from every other teacher layer), all from the repository root:

  python -m launch.distill --config=configs/distill_bold.py:teacher \
      --workdir=runs/distill_bold/teacher
  for v in plain cda tpp_max tpp_mean tpp_expmean cda_tpp; do
    python -m launch.distill --config=configs/distill_bold.py:$v \
        --workdir=runs/distill_bold/$v
  done
  python -m launch.distill --table=runs/distill_bold

Students read the teacher from `teacher_dir`
(default runs/distill_bold/teacher/model). Variants: teacher, plain, cda
(counterfactual data augmentation, swapped rows added), cda_swap (rows
swapped with probability 0.5), tpp_max, tpp_mean, tpp_expmean (teacher
prediction perturbation, Gupta et al. 2022), cda_tpp (both, expmean),
scratch (plain distillation into a randomly initialised student),
any student variant with the modifier `,kd` (e.g. `tpp_expmean,kd`: pure
distillation, alpha_kd=1, alpha_ce=0, T=1),
smoke_teacher and smoke (seconds; tests: the smoke student needs
--config.teacher_dir=<smoke_teacher workdir>/model).

Data: $TRUSTJAX_DATA_DIR/bold/*_{wiki,prompt}.json and
tinyshakespeare/input.txt; 20% of the BOLD entities (persons, profession
titles) are held out: their sentences give the held-out perplexity and their
prompts the generations scored for gender polarity and sentiment.
Vocabulary: GPT-2 BPE restricted to tokens seen >= data.min_count times in
the training text (and its counterfactual), swap partners kept, renumbered;
the GPT-2 token permutation is remapped consistently (trustjax.distill.corpus).
Sizes are set for the whole study (teacher + 6 students) to fit in about
40 minutes on 2 CPU cores (measured on the shared 2-core machine: teacher
8.3 min of training, students 1-2.5 min each plus ~1 min of data and eval).

Measured (seed 0, one run each; profession domain, 100 held-out prompts per
group; `disparity` = mean over groups of |frac_male - frac_female|,
`overall gap` = |frac_male - frac_female| over all profession generations):

  default loss (alpha_kd = alpha_ce = 0.5, T = 2): plain 0.072 / 0.060,
  ppl 172.3; cda 0.053 / 0.022 (-26% / -63%), ppl +1.2%; tpp_* within noise
  of plain (-10%..+8% / -7%); cda_tpp -21% / -62%, ppl +1.2%.
  `,kd` (alpha_kd=1, alpha_ce=0, T=1): plain 0.065 / 0.052, ppl 183.6;
  tpp_expmean 0.042 / 0.021 (-35% / -59%), ppl +0.01%; tpp_mean -26% / -48%;
  tpp_max -16% / -36%; cda +21% / +21%; cda_tpp -26% / -50%, ppl +0.2%.
"""

from trustjax.distill.job import base_config

TEACHER_DIR = "runs/distill_bold/teacher/model"
VARIANTS = ("teacher", "plain", "cda", "cda_swap", "tpp_max", "tpp_mean",
            "tpp_expmean", "cda_tpp", "scratch", "smoke_teacher", "smoke")


def get_config(arg: str | None = None):
  c = base_config()
  c.teacher_dir = TEACHER_DIR
  c.data.seq_len = 48
  c.data.min_count = 16
  c.model.update(n_embd=128, n_layer=4, n_head=4, scratch_layers=2)
  c.batch_size = 16
  c.num_steps = 200
  c.log_every = 25
  c.checkpoint_every = 100
  c.optimizer.learning_rate = 1e-3
  c.eval.prompts_per_group = 20
  arg = arg or "plain"
  arg, _, modifier = arg.partition(",")
  if modifier not in ("", "kd"):
    raise ValueError(f"unknown modifier {modifier!r} in "
                     f"configs/distill_bold.py:{arg},{modifier}; valid: kd")
  if modifier == "kd":
    # Pure distillation at T = 1: the student learns only from the
    # (possibly perturbed) teacher. TPP then acts on the whole signal; CDA
    # alone does nothing useful (the teacher is biased on swapped text too).
    c.distill.update(alpha_kd=1.0, alpha_ce=0.0, temperature=1.0)
  # Students are scored on up to 100 held-out prompts per group (the gap
  # of a group is a difference of two fractions: 20 prompts left it
  # dominated by sampling noise); the teacher's own score used 20.
  c.eval.prompts_per_group = 100
  if arg == "teacher":
    c.mode = "lm"
    c.teacher_dir = ""
    c.eval.prompts_per_group = 20
    c.num_steps = 500
    c.optimizer.learning_rate = 2e-3
  elif arg == "plain":
    pass
  elif arg == "cda":
    c.cda.mode = "add"
  elif arg == "cda_swap":
    c.cda.mode = "swap"
    c.cda.p = 0.5
  elif arg in ("tpp_max", "tpp_mean", "tpp_expmean"):
    c.tpp.method = arg[4:]
  elif arg == "cda_tpp":
    c.cda.mode = "add"
    c.tpp.method = "expmean"
  elif arg == "scratch":
    c.student_init = "scratch"
  elif arg in ("smoke", "smoke_teacher"):
    c.data.max_bold_entities = 6
    c.data.shakespeare_speeches = 20
    c.data.seq_len = 32
    c.data.min_count = 2
    c.model.update(n_embd=32, n_layer=2, n_head=2, scratch_layers=1)
    c.batch_size = 8
    c.num_steps = 12
    c.log_every = 4
    c.checkpoint_every = 5
    c.optimizer.warmup_steps = 2
    c.eval.update(batch_size=16, prompts_per_group=1, max_prompt_len=8,
                  max_new_tokens=6)
    if arg == "smoke_teacher":
      c.mode = "lm"
      c.teacher_dir = ""
    else:
      c.cda.mode = "swap"
      c.tpp.method = "mean"
      c.teacher_dir = ""   # set --config.teacher_dir=<smoke_teacher>/model
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/distill_bold.py; "
                     f"valid: {', '.join(VARIANTS)}")
  return c
