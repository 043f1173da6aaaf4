r"""Federated next-character prediction on Tiny Shakespeare, one client per
speaker within a segment (LEAF's Shakespeare task, Caldas et al. 2018).

  TRUSTJAX_DATA_DIR=/path/to/data python -m launch.simulate_fl \
      --config=configs/fl_shakespeare.py --workdir=runs/fl_shakespeare

1194 natural clients (`trustjax.data.load_shakespeare`), 120 held out for
evaluation; each speech cut into rows of 80 characters; a 2-layer GPT-2
(d=64, 4 heads) over the training clients' characters; FedAvg with client SGD
(lr 1.0, batch 8, 2 local epochs), 10 clients per round, 100 rounds. The
summary gives held-out next-character accuracy against the unigram baseline
(always the most frequent character) and the distribution of per-client
accuracy over the held-out clients.
Variants: `:smoke` (seconds: 40 clients of 8 rows, tiny model, 4 rounds),
`:short` (the same for 40 rounds, run by
tests/federated/test_federated_job_shakespeare.py),
`:fedopt` (server Adam lr 0.01; untuned: 100 rounds gave 0.042 held-out
accuracy, below the unigram baseline), `:activity` (activity-based client
selection).
"""

from trustjax.experiment.federated_job import shakespeare_config


def get_config(arg: str | None = None):
  config = shakespeare_config()
  if arg in (None, "", "default"):
    pass
  elif arg == "fedopt":
    config.fl.algorithm = "fedopt"
  elif arg == "activity":
    config.fl.selection = "activity"
  elif arg in ("smoke", "short"):
    # The first 40 clients with at least 8 rows of 32 characters, 8 rows
    # each: all clients run the same local steps, so a round compiles once.
    config.data.max_clients = 40
    config.data.seq_len = 32
    config.data.max_rows_per_client = 8
    config.data.min_rows_per_client = 8
    config.model.n_embd = 32
    config.model.n_layer = 1
    config.model.n_head = 2
    config.eval_batch_size = 128
    config.fl.heldout_clients = 8
    config.fl.cohort_size = 8
    config.fl.client_batch_size = 8
    config.fl.local_epochs = 4
    config.fl.client_lr = 1.0
    config.fl.rounds = 4
    config.fl.eval_every = 2
    if arg == "short":
      config.fl.rounds = 40
      config.fl.eval_every = 5
  else:
    raise ValueError(f"unknown variant {arg!r} of configs/fl_shakespeare.py; "
                     "valid: default, fedopt, activity, smoke, short")
  return config
