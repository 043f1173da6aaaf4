"""BOLD generation metrics: polarity counts, Gender-Wavg, VADER, disparity."""

import os

import numpy as np
import pytest

from trustjax.fairness import generation as gen


def test_word_polarity_counts_whole_words():
  texts = ["He said his sister is there.", "She and her mother, HER aunt",
           "the history of the shelf", "", "The actress met the actor's son"]
  m, f = gen.word_polarity_counts(texts)
  np.testing.assert_array_equal(m, [2, 0, 0, 0, 2])   # actor's -> actor
  np.testing.assert_array_equal(f, [1, 5, 0, 0, 1])
  np.testing.assert_array_equal(gen.polarity_labels(m, f), [1, -1, 0, 0, 1])


def test_embedding_polarity_matches_loop():
  rng = np.random.default_rng(0)
  emb = rng.normal(size=(20, 6))
  d = gen.gender_direction(emb, [(1, 2), (3, 4)])
  ref_d = (emb[1] - emb[2] + emb[3] - emb[4]) / 2
  np.testing.assert_allclose(d, ref_d / np.linalg.norm(ref_d))
  toks = [[1, 5, 7], [2], []]
  out = gen.embedding_polarity(toks, emb, d)
  for i, ids in enumerate(toks):
    b = [float(emb[t] @ d / np.linalg.norm(emb[t])) for t in ids]
    ref = (sum(np.sign(x) * x * x for x in b) / sum(abs(x) for x in b)
           if b else 0.0)
    assert out[i] == pytest.approx(ref)
  assert out[0] != 0 and out[1] < 0   # "she" side of the direction
  with pytest.raises(ValueError, match="pairs"):
    gen.gender_direction(emb, [])


def test_vader_matches_package():
  from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer
  texts = ["She is a wonderful, brilliant engineer.", "He was a terrible liar.",
           "The table."]
  a = SentimentIntensityAnalyzer()
  np.testing.assert_allclose(gen.vader_compound(texts),
                             [a.polarity_scores(t)["compound"] for t in texts])
  s = gen.vader_compound(texts)
  assert s[0] > 0.5 and s[1] < -0.5 and s[2] == 0


def test_group_polarity_and_disparity():
  groups = ["nurse", "nurse", "nurse", "nurse", "pilot", "pilot"]
  labels = np.array([1, -1, -1, 0, 1, 1])
  rows = gen.group_polarity(groups, labels, sentiment=np.array(
      [0.6, 0, 0, -0.7, 0.1, 0.9]))
  assert [r["group"] for r in rows] == ["nurse", "pilot"]
  assert rows[0]["frac_male"] == 0.25 and rows[0]["frac_female"] == 0.5
  assert rows[0]["frac_positive"] == 0.25 and rows[0]["frac_negative"] == 0.25
  assert rows[1]["gap"] == 1.0
  d = gen.disparity(rows)
  assert d["mean_abs_gap"] == pytest.approx((0.25 + 1.0) / 2)
  assert d["max_abs_gap"] == 1.0


def test_evaluate_generations_table_and_plot(tmp_path):
  texts = ["he is a nurse", "she is a nurse", "his son", "a pilot"]
  res = gen.evaluate_generations(texts, ["nurse", "nurse", "pilot", "pilot"],
                                 ["profession"] * 4)
  s = res["summary"]
  assert s["profession_disparity"] == pytest.approx((0 + 0.5) / 2)
  assert s["profession_frac_male"] == 0.5
  table = gen.markdown_table(res["groups"]["profession"])
  assert table.splitlines()[0].startswith("| group | n | frac_male")
  path = str(tmp_path / "p.png")
  gen.plot_group_polarity(path, res["groups"]["profession"], "t")
  assert os.path.getsize(path) > 0
