"""The federated next-character job on Tiny Shakespeare (real file).

One 40-round run of `configs/fl_shakespeare.py:short` (40 clients of 8 rows,
one compilation) serves several checks; the smoke variant and the resumed
run reuse its compiled programs. Needs TRUSTJAX_DATA_DIR.
"""

import json
import math
import os

import numpy as np
import pytest

from conftest import data_dir_or_skip
from trustjax.experiment import federated_job
from trustjax.experiment import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "configs", "fl_shakespeare.py")


def _config(variant):
  cfg = load_config(CONFIG, variant)
  cfg.data.data_dir = data_dir_or_skip("tinyshakespeare", "input.txt")
  return cfg


def _lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return f.read().splitlines()


@pytest.fixture(scope="module")
def full(tmp_path_factory):
  cfg = _config("short")
  wd = str(tmp_path_factory.mktemp("shakespeare") / "full")
  return cfg, wd, federated_job.run(cfg, wd)


def test_smoke_run(tmp_path, full):
  del full  # compiles the programs the smoke run reuses
  cfg = _config("smoke")
  s = federated_job.run(cfg, str(tmp_path / "w"))
  assert s["num_clients"] == 40 and s["heldout_clients_evaluated"] == 8
  assert s["rows"] == 40 * 8
  rows = [json.loads(l) for l in _lines(tmp_path / "w")]
  assert [r["step"] for r in rows] == [2, 4]
  assert all(math.isfinite(r["val_loss"]) for r in rows)
  assert os.path.exists(tmp_path / "w" / "partition.png")
  with open(tmp_path / "w" / "summary.json") as f:
    assert json.load(f)["heldout_acc_p50"] == s["heldout_acc_p50"]


def test_resume_is_exact(tmp_path, full):
  cfg, wd, summary = full
  part = str(tmp_path / "part")
  assert federated_job.run(cfg, part, stop_after=13) == {"stopped_at": 13}
  resumed = federated_job.run(cfg, part)
  assert _lines(wd) == _lines(part)
  drop = lambda s: {k: v for k, v in s.items() if k != "seconds_this_run"}
  assert drop(resumed) == drop(summary)


def test_beats_unigram_and_loss_falls(full):
  _, wd, s = full
  assert s["unigram_char"] == " "
  assert s["heldout_accuracy"] > s["heldout_unigram_accuracy"] + 0.03
  assert s["heldout_acc_mean"] > s["heldout_unigram_acc_mean"] + 0.03
  rows = [json.loads(l) for l in _lines(wd)]
  assert rows[-1]["val_loss"] < rows[0]["val_loss"] - 0.1
  assert s["heldout_acc_p10"] <= s["heldout_acc_p50"] <= s["heldout_acc_p90"]


def _reference_heldout(cfg):
  """Held-out clients' rows and the training clients' characters, by a
  plain loop over speeches following the documented rules."""
  from trustjax.data import load_shakespeare
  raw = load_shakespeare(cfg.data.data_dir)
  seq, cap = cfg.data.seq_len, cfg.data.max_rows_per_client
  speeches = {}
  for text, c in zip(raw["text"], raw["client_index"]):
    speeches.setdefault(int(c), []).append(text)
  chosen = []
  for c in sorted(speeches):   # client_index is in order of first appearance
    n = sum(-(-len(t) // seq) for t in speeches[c])
    if min(n, cap) >= cfg.data.min_rows_per_client:
      chosen.append(c)
    if len(chosen) == cfg.data.max_clients:
      break
  perm = np.random.default_rng([cfg.fl.partition_seed, 7]).permutation(
      len(chosen))
  heldout = sorted(perm[:cfg.fl.heldout_clients])
  train_chars = sorted({ch for j in perm[cfg.fl.heldout_clients:]
                        for t in speeches[chosen[j]] for ch in t})
  rows = {}
  for j in heldout:
    out = []
    for t in speeches[chosen[j]]:
      for start in range(0, len(t), seq):
        out.append(((t[start - 1] if start else None), t[start:start + seq]))
    rows[j] = out[:cap]
  return rows, train_chars


def test_heldout_accuracy_matches_a_per_client_loop(full):
  """Restores the final model and recomputes every held-out client's
  next-character accuracy from rows cut by a plain loop, hits counted one
  position at a time."""
  import jax.numpy as jnp
  from flax import nnx
  from trustjax import experiment as tjx
  from trustjax import models
  cfg, wd, s = full
  rows, chars = _reference_heldout(cfg)
  vocab = {ch: i + 3 for i, ch in enumerate(chars)}   # 0 pad, 1 BOS, 2 UNK
  assert s["vocab_size"] == len(chars) + 3
  gcfg = models.GPT2Config(vocab_size=len(chars) + 3,
                           n_positions=cfg.data.seq_len + 1,
                           n_embd=cfg.model.n_embd,
                           n_layer=cfg.model.n_layer,
                           n_head=cfg.model.n_head)
  graphdef, params, rest = nnx.split(
      models.GPT2LMHeadModel(gcfg, rngs=nnx.Rngs(0)), nnx.Param, ...)
  ckpt = tjx.Checkpointer(wd, every_steps=1)
  step, tree, _ = ckpt.restore_latest({"server": {"params": params},
                                       "clients": None})
  ckpt.close()
  assert step == cfg.fl.rounds
  model = nnx.merge(graphdef, tree["server"]["params"], rest)
  width = cfg.data.seq_len + 1
  apply = nnx.jit(lambda m, ids, mask: m(ids, attention_mask=mask))
  accs = []
  for j in sorted(rows):
    seqs = [[1 if ctx is None else vocab.get(ctx, 2)] +
            [vocab.get(ch, 2) for ch in text] for ctx, text in rows[j]]
    ids = np.zeros((len(seqs), width), np.int32)
    for r, q in enumerate(seqs):
      ids[r, :len(q)] = q
    logits = np.asarray(apply(model, jnp.asarray(ids),
                              jnp.asarray(ids > 0)))
    hits = total = 0
    for r, q in enumerate(seqs):
      for t in range(len(q) - 1):
        hits += int(np.argmax(logits[r, t]) == q[t + 1])
        total += 1
    accs.append(hits / total)
  accs = np.array(accs)
  assert s["heldout_clients_evaluated"] == len(accs)
  np.testing.assert_allclose(s["heldout_acc_mean"], accs.mean(), atol=1e-6)
  np.testing.assert_allclose(
      [s["heldout_acc_p10"], s["heldout_acc_p50"], s["heldout_acc_p90"]],
      np.percentile(accs, [10, 50, 90]), atol=1e-6)


def test_bad_config(tmp_path):
  cfg = _config("smoke")
  cfg.fl.cohort_size = 39   # 40 clients, 8 held out: at most 32
  with pytest.raises(ValueError, match="cohort_size=39"):
    federated_job.run(cfg, str(tmp_path / "w"))
  cfg = _config("smoke")
  cfg.fl.partition = "iid"
  with pytest.raises(ValueError, match="partition"):
    federated_job.run(cfg, str(tmp_path / "w2"))
