r"""Sweep of DP-SGD on CLINC150: accuracy against epsilon.

Command (from the repository root):

  python -m launch.sweep --config=configs/sweep_dp_clinc150.py
  python -m launch.sweep --config=configs/sweep_dp_clinc150.py:random
  # On a cluster: one command per point plus a SLURM array script.
  python -m launch.sweep --config=configs/sweep_dp_clinc150.py \
      --print_commands && sbatch runs/sweep_dp_clinc150/slurm_array.sh
  python -m launch.sweep --config=configs/sweep_dp_clinc150.py --report_only

Writes `sweep_dir/points/<point_id>/` (one job workdir per point: rerunning
the sweep skips finished points and resumes interrupted ones),
`results.csv`/`results.md` (config, final metrics and epsilon per point),
`pareto.png` and `report.md` (Pareto frontier, best point per epsilon
bucket, failures).

Fields:
  base          job config "file.py[:variant]" (relative to the repo root).
  overrides     nested field -> value applied to every point.
  grid          nested field -> tuple of values; all combinations.
  zip           nested field -> tuple of values, equal lengths; varied
                together (row i of every field), crossed with the grid.
  random        num_points (0: none), seed, distributions: nested field ->
                ("choice", (v1, ...)) | ("uniform", lo, hi) |
                ("loguniform", lo, hi); crossed with grid x zip.
  mode          "stacked" (all points in one vmapped program; only seed,
                learning rate, clip norm, noise multiplier, target epsilon
                and delta may vary), "processes" (one process per point) or
                "auto" (stack the points that share shapes).
  max_parallel  processes at a time (and SLURM array concurrency).
  stack_size    models per stacked program (0: all).
  metric        accuracy column of the report ('' = in-scope test accuracy).
  epsilon_buckets  bucket edges of "best configuration per epsilon".

Variants: default (5 epsilons x 3 learning rates x 2 clip norms, stacked in
programs of 6 models), `:random` (24 random points), `:processes` (the
default grid as separate processes), `:frontier` (24 points at 10 epochs:
the frontier recorded in BENCHMARKS.md), `:smoke` (2 stacked smoke points;
seconds, for tests).
"""

import math

from ml_collections import config_dict


def get_config(arg: str | None = None):
  c = config_dict.ConfigDict()
  c.base = "configs/dp_clinc150.py"
  c.overrides = config_dict.ConfigDict()
  c.grid = config_dict.ConfigDict({
      "dp": {"target_epsilon": (0.5, 1.0, 2.0, 4.0, 8.0),
             "l2_clip": (0.5, 1.0)},
      "optimizer": {"learning_rate": (0.01, 0.02, 0.05)},
  })
  c.zip = config_dict.ConfigDict()
  c.random = config_dict.ConfigDict(dict(num_points=0, seed=0,
                                         distributions={}))
  c.mode = "stacked"
  c.max_parallel = 2
  c.stack_size = 6
  c.sweep_dir = "runs/sweep_dp_clinc150"
  c.metric = ""
  c.epsilon_buckets = (0.5, 1.0, 2.0, 4.0, 8.0, math.inf)
  if arg in (None, "", "default"):
    pass
  elif arg == "processes":
    c.mode = "processes"
  elif arg == "random":
    c.grid = config_dict.ConfigDict()
    c.random = config_dict.ConfigDict(dict(
        num_points=24, seed=0, distributions={
            "dp": {"target_epsilon": ("choice", (0.5, 1.0, 2.0, 4.0, 8.0)),
                   "l2_clip": ("loguniform", 0.1, 5.0)},
            "optimizer": {"learning_rate": ("loguniform", 0.003, 0.1)},
        }))
    c.sweep_dir = "runs/sweep_dp_clinc150_random"
  elif arg == "frontier":
    # The recorded frontier (BENCHMARKS.md): 4 epsilons x 3 learning rates x
    # 2 clip norms = 24 points at 10 epochs (the demo's length), stacked 6 per
    # program; ~30 min on a 2-core CPU.
    c.base = "configs/dp_clinc150.py:demo"
    c.overrides = config_dict.ConfigDict({"data": {"allow_synthetic": False},
                                          "log_every": 50})
    c.grid = config_dict.ConfigDict({
        "dp": {"target_epsilon": (1.0, 2.0, 4.0, 8.0), "l2_clip": (0.5, 1.0)},
        "optimizer": {"learning_rate": (0.01, 0.02, 0.05)},
    })
    c.sweep_dir = "runs/sweep_dp_clinc150_frontier"
  elif arg == "smoke":
    c.base = "configs/dp_clinc150.py:smoke"
    c.grid = config_dict.ConfigDict({"dp": {"target_epsilon": (2.0, 8.0)}})
    c.stack_size = 0
    c.sweep_dir = "runs/sweep_smoke"
    c.epsilon_buckets = (1.0, 4.0, math.inf)
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/sweep_dp_clinc150.py;"
                     " valid: default, processes, random, frontier, smoke")
  return c
