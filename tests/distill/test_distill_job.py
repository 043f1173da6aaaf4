"""The distillation job: exact resume, CDA/TPP wiring, corpus vocabulary."""

import os

import numpy as np
import pytest
from conftest import REPO_ROOT, data_dir_or_skip

from trustjax.experiment import load_config

CONFIG = os.path.join(REPO_ROOT, "configs", "distill_bold.py")


@pytest.fixture(scope="module")
def smoke_teacher(tmp_path_factory):
  data_dir_or_skip("bold", "gender_wiki.json")
  data_dir_or_skip("tinyshakespeare", "input.txt")
  from trustjax.distill import job
  wd = str(tmp_path_factory.mktemp("teacher"))
  job.run(load_config(CONFIG, "smoke_teacher", {"eval.generate": False}), wd)
  return os.path.join(wd, "model")


def _lines(wd):
  with open(os.path.join(wd, "metrics.jsonl")) as f:
    return f.read().splitlines()


def test_resume_is_exact(tmp_path, smoke_teacher):
  """Interrupted after 7 steps (checkpoint every 5), resumed: same metrics."""
  from trustjax.distill import job
  cfg = lambda: load_config(CONFIG, "smoke", {"teacher_dir": smoke_teacher,
                                              "eval.generate": False})
  full, part = str(tmp_path / "full"), str(tmp_path / "part")
  s_full = job.run(cfg(), full)
  assert job.run(cfg(), part, stop_after=7) == {"stopped_at": 7}
  s_part = job.run(cfg(), part)
  assert _lines(full) == _lines(part)
  assert s_full["heldout_ppl"] == s_part["heldout_ppl"]
  assert len(_lines(full)) == 12 // 4 + 1
  assert np.isfinite(s_full["heldout_ppl"])


def test_corpus_vocab_and_permutation(smoke_teacher):
  """Small ids map back to GPT-2 ids; the remapped permutation is an
  involution that swaps exactly the kept GPT-2 pairs."""
  from trustjax.distill import job
  from trustjax.fairness import token_permutation
  c = load_config(CONFIG, "smoke_teacher")
  data = job.Data(c)
  perm, vocab = data.perm, data.vocab
  np.testing.assert_array_equal(perm[perm], np.arange(len(perm)))
  full = token_permutation(data.tokenizer)
  g = vocab.to_gpt2(np.arange(len(vocab)))
  for i in range(2, len(vocab)):
    if perm[i] != i:
      assert full[g[i]] == g[perm[i]]
    else:
      assert full[g[i]] == g[i] or full[g[i]] not in set(g.tolist())
  he, she = data.local_ids(" he"), data.local_ids(" she")
  assert perm[he[0]] == she[0]
  # Counterfactual rows hold the swapped documents.
  rows = np.nonzero(data.gendered_row)[0]
  assert len(rows) > 0
  r = rows[0]
  orig = data.decode(data.ids[r][data.mask[r]])
  cf = data.decode(data.cf_ids[r][data.cf_mask[r]])
  assert orig != cf
  # CDA "add" appends exactly the gendered rows.
  ids, _ = data.train_arrays("add")
  assert len(ids) == len(data.ids) + data.gendered_row.sum()


def test_swap_mask_is_deterministic():
  from trustjax.distill.job import swap_mask
  a = swap_mask(1000, 0.3, 0, 5)
  np.testing.assert_array_equal(a, swap_mask(1000, 0.3, 0, 5))
  assert 0.25 < a.mean() < 0.35
  assert not swap_mask(10, 0.0, 0, 1).any()


def test_bad_config_is_refused(tmp_path):
  from trustjax.distill import job
  c = load_config(CONFIG, "smoke")
  with pytest.raises(ValueError, match="teacher_dir"):
    job.run(c, str(tmp_path / "a"))
  c = load_config(CONFIG, "smoke_teacher", {"tpp.method": "mean"})
  with pytest.raises(ValueError, match="tpp.method"):
    job.run(c, str(tmp_path / "b"))
  c = load_config(CONFIG, "tpp_expmean,kd")
  assert (c.distill.alpha_kd, c.distill.alpha_ce, c.tpp.method) == (
      1.0, 0.0, "expmean")
  with pytest.raises(ValueError, match="modifier"):
    load_config(CONFIG, "plain,fast")
  c = load_config(CONFIG, "plain", {"cda.mode": "twice"})
  with pytest.raises(ValueError, match="cda.mode"):
    job.validate_config(c)
