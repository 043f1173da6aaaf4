"""CEAT: meta-analysis against the published formulas, sampling against a
numpy loop, planted/no bias, missing words, contextual embedding extraction."""

import math
import re

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance

from conftest import data_dir_or_skip
from trustjax.fairness import ceat as C
from trustjax.fairness import embeddings as E
from trustjax.fairness.weat import WeatTest


def reference_meta(es, v):
  """Guo & Caliskan (2021) eqs. with DerSimonian-Laird tau^2, plain Python."""
  es, v = list(map(float, es)), list(map(float, v))
  n = len(es)
  w = [1 / x for x in v]
  sw = math.fsum(w)
  q = (math.fsum(wi * e * e for wi, e in zip(w, es)) -
       math.fsum(wi * e for wi, e in zip(w, es))**2 / sw)
  c = sw - math.fsum(wi * wi for wi in w) / sw
  tau2 = (q - (n - 1)) / c if q >= n - 1 else 0.0
  vs = [1 / (x + tau2) for x in v]
  ces = math.fsum(a * e for a, e in zip(vs, es)) / math.fsum(vs)
  se = math.sqrt(1 / math.fsum(vs))
  p = 2 * (1 - stats.norm.cdf(abs(ces / se)))
  return ces, se, p, tau2, q


@pytest.mark.parametrize("es,v", [
    ([0.9, 0.4, 1.3, -0.2, 0.7, 1.1], [0.02, 0.05, 0.03, 0.04, 0.01, 0.06]),
    ([0.30, 0.32, 0.29, 0.31], [0.5, 0.4, 0.6, 0.45]),        # tau^2 = 0
    ([-0.05, 0.02, 0.01, -0.03, 0.04], [0.1] * 5),
])
def test_random_effects_equals_published_formulas(es, v):
  r = C.random_effects(es, v)
  ces, se, p, tau2, q = reference_meta(es, v)
  assert r.ces == pytest.approx(ces, rel=1e-12, abs=1e-15)
  assert r.se == pytest.approx(se, rel=1e-12)
  assert r.p_value == pytest.approx(p, rel=1e-9, abs=1e-15)
  assert r.tau2 == pytest.approx(tau2, rel=1e-12, abs=1e-15)
  assert r.q == pytest.approx(q, rel=1e-9, abs=1e-12)
  if tau2 == 0:   # fixed-effect case: inverse-variance weighted mean
    w = 1 / np.asarray(v)
    assert r.ces == pytest.approx(np.sum(w * es) / w.sum(), rel=1e-12)


def test_random_effects_bad_input():
  with pytest.raises(ValueError, match="same length"):
    C.random_effects([1.0, 2.0], [1.0])
  with pytest.raises(ValueError, match="> 0"):
    C.random_effects([1.0, 2.0], [1.0, 0.0])


def _contextual(word_means, n_ctx, noise, rng):
  return {w: m + noise * rng.normal(size=(n_ctx, m.size))
          for w, m in word_means.items()}


def _words(prefix, n):
  return [f"{prefix}{i}" for i in range(n)]


@pytest.mark.parametrize("max_table", [50_000_000, 0])   # table / direct
@pytest.mark.parametrize("variance", ["association", "cohen_d"])
def test_samples_equal_numpy_loop(max_table, variance):
  rng = np.random.default_rng(0)
  x, y, a, b = _words("x", 4), _words("y", 3), _words("a", 3), _words("b", 4)
  emb = {w: rng.normal(size=(rng.integers(1, 6), 12))
         for w in x + y + a + b}
  es, v, idx, table = C.ceat_samples(
      emb, x, y, a, b, num_samples=50, seed=3, variance=variance,
      chunk_size=16, max_table_entries=max_table, return_indices=True)
  words = x + y + a + b
  offsets = np.cumsum([0] + [len(emb[w]) for w in words])[:-1]
  raw = np.concatenate([emb[w] for w in words])
  for i in (0, 7, 16, 49):
    local = idx[i] - offsets
    assert np.all((local >= 0) & (local < [len(emb[w]) for w in words]))
    vec = raw[idx[i]]
    vx, vy, va, vb = np.split(vec, np.cumsum([4, 3, 3]))

    def s(w):
      return (np.mean([1 - distance.cosine(w, q) for q in va]) -
              np.mean([1 - distance.cosine(w, q) for q in vb]))
    sx, sy = [s(w) for w in vx], [s(w) for w in vy]
    std = np.std(sx + sy, ddof=1)
    ref_es = (np.mean(sx) - np.mean(sy)) / std
    ref_v = std**2 if variance == "association" else (
        7 / 12 + ref_es**2 / 14)
    assert es[i] == pytest.approx(ref_es, rel=2e-4, abs=2e-5)
    assert v[i] == pytest.approx(ref_v, rel=2e-4, abs=1e-7)
  # every word's occurrences are all used over many samples
  assert len(np.unique(idx[:, 0])) == len(emb[x[0]])


def _planted_test(t, n_per=10, dim=64, seed=0):
  """Word means w = t e1 + sqrt(1-t^2) e_w; A near +e1, B near -e1."""
  rng = np.random.default_rng(seed)
  x, y, a, b = (_words(p, n_per) for p in "xyab")
  eye = np.eye(dim)
  means = {}
  for i, w in enumerate(x + y):
    means[w] = t[i] * eye[0] + math.sqrt(1 - t[i]**2) * eye[2 + i]
  for i, w in enumerate(a + b):
    sign = 1 if w.startswith("a") else -1
    means[w] = sign * 0.8 * eye[0] + eye[2 + 2 * n_per + i]
  return WeatTest("planted", *map(tuple, (x, y, a, b))), means, rng


def test_planted_bias_is_large_and_significant():
  t = np.r_[np.full(10, 0.4), np.full(10, -0.4)]
  test, means, rng = _planted_test(t)
  emb = _contextual(means, 20, 0.08, rng)
  r = C.ceat(emb, test, num_samples=2000, seed=1)
  assert r.meta.ces > 1.0 and r.pes > 1.0
  assert r.meta.p_value < 1e-6
  flipped = WeatTest("flip", test.Y, test.X, test.A, test.B)
  assert C.ceat(emb, flipped, num_samples=2000, seed=1).meta.ces == \
      pytest.approx(-r.meta.ces, rel=0.05)


def test_no_bias_is_near_zero_and_not_significant():
  # every occurrence of every word drawn from one distribution: no bias
  rng = np.random.default_rng(5)
  x, y, a, b = (_words(p, 8) for p in "xyab")
  emb = {w: rng.normal(size=(30, 32)) for w in x + y + a + b}
  r = C.ceat(emb, WeatTest("null", *map(tuple, (x, y, a, b))),
             num_samples=2000, seed=2)
  assert abs(r.meta.ces) < 0.05
  assert r.meta.p_value > 0.05
  assert r.meta.tau2 >= 0


def test_missing_word_raise_or_skip():
  t = np.r_[np.full(4, 0.3), np.full(4, -0.3)]
  test, means, rng = _planted_test(t, n_per=4, dim=32)
  emb = _contextual(means, 5, 0.05, rng)
  del emb["x1"]
  emb["b2"] = np.zeros((0, 32))                     # no occurrence
  with pytest.raises(ValueError, match=r"x1.*b2|b2.*x1"):
    C.ceat(emb, test, num_samples=10)
  r = C.ceat(emb, test, num_samples=10, on_missing="skip")
  assert r.skipped == {"X": ("x1",), "Y": (), "A": (), "B": ("b2",)}
  assert "x1" not in r.words["X"] and len(r.words["B"]) == 3
  emb2 = {w: m for w, m in emb.items() if not w.startswith("a")}
  with pytest.raises(ValueError, match="too few"):
    C.ceat(emb2, test, num_samples=10, on_missing="skip")


# --- contextual embedding extraction --------------------------------------

_TOK = re.compile(r"\w+|[^\w\s]")


def char_tokenizer(text):
  """Words split into 3-character pieces: a word of 7 letters is 3 tokens."""
  ids, offs = [], []
  for m in _TOK.finditer(text):
    for s in range(m.start(), m.end(), 3):
      e = min(s + 3, m.end())
      ids.append(sum(map(ord, text[s:e])) % 97 + 1)
      offs.append((s, e))
  return ids, offs


def causal_model(table):
  """h_t = sum_{s<=t} (s+1) table[id_s]: causal, position-aware."""
  def embed(ids, mask):
    e = table[ids] * mask[..., None] * (np.arange(ids.shape[1]) + 1)[:, None]
    return np.cumsum(e, axis=1)
  return embed


def test_contextual_embeddings_pick_last_subtoken_and_ignore_padding():
  rng = np.random.default_rng(0)
  table = rng.normal(size=(100, 6))
  embed = causal_model(table)
  sents = {"caterpillar": ["A caterpillar ate the leaf.",
                           "Look, the big green caterpillar is here!",
                           "caterpillar"],
           "ant": ["The ant and the caterpillar.", "An ant."]}
  out = E.contextual_embeddings(embed, char_tokenizer, sents, batch_size=2,
                                max_len=64, prefix_space=False, bucket=4)
  for w, ss in sents.items():
    assert out[w].shape == (len(ss), 6)
    for r, s in enumerate(ss):
      ids, offs = char_tokenizer(s)
      end = re.search(r"\b" + w + r"\b", s).end()
      pos = [i for i, (a, b) in enumerate(offs) if a < end <= b][0]
      full = embed(np.asarray([ids]), np.ones((1, len(ids)), int))
      np.testing.assert_allclose(out[w][r], full[0, pos], rtol=1e-6)


def test_contextual_embeddings_truncate_left_context_to_max_len():
  table = np.random.default_rng(1).normal(size=(100, 4))
  embed = causal_model(table)
  s = "one two three four five six seven target word"
  out = E.contextual_embeddings(embed, char_tokenizer, {"target": [s]},
                                max_len=3, prefix_space=False)
  ids, offs = char_tokenizer(s)
  pos = [i for i, (a, b) in enumerate(offs) if s[a:b] == "get"][0]
  window = np.asarray([ids[pos - 2:pos + 1]])
  np.testing.assert_allclose(out["target"][0],
                             embed(window, np.ones_like(window))[0, -1])


def test_find_sentences_whole_words_and_cap():
  corpus = ["He said she left.", "The theme is here.", "she-wolf", "She",
            "she's here", "Ashes"]
  got = E.find_sentences(corpus, ["she", "he", "her", "wolf"],
                         max_per_word=None)
  assert got["she"] == ["He said she left.", "she's here"]
  assert got["he"] == []                       # "He", "the", "theme": no
  assert got["her"] == [] and got["wolf"] == []
  insens = E.find_sentences(corpus, ["she"], case_sensitive=False,
                            max_per_word=2)
  assert insens["she"] == ["He said she left.", "She"]


def test_gpt2_tokenizer_locates_last_subtoken():
  from trustjax.models import gpt2_tokenizer
  tok = gpt2_tokenizer()
  s = "Yesterday Shaniqua met the engineer."
  ids, pos = E.locate_word(tok, s, "Shaniqua")
  assert tok.decode(ids[:pos + 1]).endswith(" Yesterday Shaniqua")
  assert tok.decode(ids[pos + 1:pos + 2]) == " met"
  ids, pos = E.locate_word(tok, "Shaniqua met him", "Shaniqua")
  assert tok.decode(ids[:pos + 1]) == " Shaniqua"
  with pytest.raises(ValueError, match="does not occur"):
    E.locate_word(tok, "nothing here", "Shaniqua")


def test_gpt2_embedder_batched_equals_one_by_one():
  gpt2 = pytest.importorskip("trustjax.models.gpt2")
  from flax import nnx
  from trustjax.models import gpt2_tokenizer
  cfg = gpt2.GPT2Config(n_embd=32, n_layer=2, n_head=2, n_positions=64)
  model = gpt2.GPT2LMHeadModel(cfg, rngs=nnx.Rngs(0))
  tok = gpt2_tokenizer()
  sents = {"she": ["Then she laughed loudly at the joke.", "she ran"],
           "engineer": ["The engineer fixed the old bridge."]}
  fn = E.gpt2_embed_fn(model)
  out = E.contextual_embeddings(fn, tok, sents, batch_size=2, max_len=32,
                                causal=False)
  for w, ss in sents.items():
    for r, s in enumerate(ss):
      ids, pos = E.locate_word(tok, s, w)
      # reference: the same model on the sentence alone, unpadded
      h = fn(np.asarray([ids], np.int32), np.ones((1, len(ids)), np.int32))
      np.testing.assert_allclose(out[w][r], np.asarray(h[0, pos]),
                                 rtol=2e-4, atol=2e-5)
  causal = E.contextual_embeddings(fn, tok, sents, batch_size=2, max_len=32)
  for w in sents:
    np.testing.assert_allclose(causal[w], out[w], rtol=2e-4, atol=2e-5)


def test_bold_corpus_covers_gender_tests_and_reports_missing():
  root = data_dir_or_skip("bold", "gender_wiki.json")
  corpus = E.bold_sentences(root.rsplit("/bold", 1)[0])
  assert len(corpus) > 10000
  tests = {"weat8": WeatTest("w8", ("science", "physics"), ("poetry", "art"),
                             ("he", "his", "Zzyzxq"), ("she", "her"))}
  found = E.find_sentences(corpus, tests["weat8"].words(), max_per_word=50)
  assert len(found["he"]) == 50 and len(found["she"]) == 50
  assert all(re.search(r"\bscience\b", s) for s in found["science"])
  with pytest.raises(ValueError, match="Zzyzxq"):
    C.resolve_words(tests["weat8"], {w for w, s in found.items() if s})
