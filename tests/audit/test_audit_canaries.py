"""Canary patterns, insertion, tokenisation checks and exposure."""

import math

import numpy as np
import pytest
from scipy import stats

from trustjax import audit
from trustjax import data as tjdata
from trustjax.models import BPEEncoder

PIN = "my pin code is {d} {d} {d} {d}"


def test_pattern_candidates():
  p = audit.CanaryPattern(PIN, label=3)
  assert p.num_slots == 4 and p.num_candidates == 10 ** 4
  assert p.format([1, 2, 3, 4]) == "my pin code is 1 2 3 4"
  allr = p.all_secrets()
  assert allr.shape == (10 ** 4, 4)
  # Row r reads as the number r.
  assert "".join(map(str, allr[1234])) == "1234"
  np.testing.assert_array_equal(p.secret_index(allr), np.arange(10 ** 4))
  sec = p.random_secrets(50, seed=0)
  assert len({tuple(s) for s in sec}) == 50
  hexp = audit.CanaryPattern("id {d}{d}", 0, alphabet="0123456789abcdef")
  assert hexp.num_candidates == 256 and hexp.format([10, 15]) == "id af"
  with pytest.raises(ValueError, match="no {d} slot"):
    audit.CanaryPattern("no slot", 0)
  with pytest.raises(ValueError, match="secret="):
    p.format([1, 2, 3])


def test_make_and_insert_canaries():
  data = tjdata.synthetic_intents(seed=0)
  n0 = len(data.train)
  p = audit.CanaryPattern(PIN, label=1)
  cans = audit.make_canaries(p, [0, 1, 5], per_count=2, seed=3)
  assert [c.repetitions for c in cans] == [0, 0, 1, 1, 5, 5]
  assert len({c.secret for c in cans}) == 6
  new, owner = audit.insert_canaries(data, cans)
  assert len(new.train) == n0 + 12 and owner.shape == (n0 + 12,)
  assert np.all(owner[:n0] == -1)
  for i, c in enumerate(cans):
    rows = np.flatnonzero(owner == i)
    assert len(rows) == c.repetitions
    assert all(new.train.texts[r] == c.text for r in rows)
    assert np.all(new.train.labels[rows] == 1)
  assert new.test is data.test and len(data.train) == n0   # input untouched
  labelled = audit.make_canaries(p, [2, 2], labels=[4, 7], seed=0)
  assert [c.pattern.label for c in labelled] == [4, 7]
  with pytest.raises(ValueError, match="labels has 1 entries"):
    audit.make_canaries(p, [2, 2], labels=[4])
  bad = audit.make_canaries(audit.CanaryPattern(PIN, label=999), [1])
  with pytest.raises(ValueError, match="label 999"):
    audit.insert_canaries(data, bad)


def test_tokenize_with_word_vocab_and_bpe():
  p = audit.CanaryPattern(PIN, label=0)
  vocab = tjdata.WordVocab.build(["my pin code is 0 1 2 3 4 5 6 7 8 9"],
                                 max_size=100)
  for tok, max_len in ((vocab, 12), (BPEEncoder(), 12)):
    ct = audit.tokenize_canary(p, tok, max_len)
    assert ct.slot_positions.tolist() == [4, 5, 6, 7]
    secrets = p.random_secrets(30, seed=1)
    got, gmask = tok.encode([p.format(s) for s in secrets], max_len)
    want, wmask = ct.encode(secrets)
    np.testing.assert_array_equal(np.asarray(gmask), wmask)
    np.testing.assert_array_equal(np.asarray(got)[wmask], want[wmask])


def test_tokenize_errors():
  bpe = BPEEncoder()
  # GPT-2 BPE merges adjacent digits ("0100" -> "01", "00").
  with pytest.raises(ValueError, match="splits canary pattern"):
    audit.tokenize_canary(audit.CanaryPattern("my pin code is {d}{d}{d}{d}",
                                              0), bpe, 16)
  # The word vocabulary sees "1234" as one word.
  vocab = tjdata.WordVocab.build(["my pin code is 0 1 2 3 4 5 6 7 8 9 0000"],
                                 max_size=100)
  with pytest.raises(ValueError):
    audit.tokenize_canary(audit.CanaryPattern("my pin code is {d}{d}{d}{d}",
                                              0), vocab, 16)
  # Digits missing from the vocabulary all map to <unk>: not recoverable.
  small = tjdata.WordVocab.build(["my pin code is 0 1"], max_size=100)
  with pytest.raises(ValueError, match="unknown word"):
    audit.tokenize_canary(audit.CanaryPattern(PIN, 0), small, 12)
  with pytest.raises(ValueError, match="truncated"):
    audit.tokenize_canary(audit.CanaryPattern(PIN, 0), bpe, 6)


def test_exposure_by_rank():
  scores = np.array([3.0, 1.0, 2.0, 0.5, 4.0, 5.0, 6.0, 7.0])
  assert audit.secret_rank(scores, 3) == 1
  assert audit.secret_rank(scores, 1) == 2
  assert audit.exposure(scores, 3) == pytest.approx(3.0)       # log2 8 - 0
  assert audit.exposure(scores, 1) == pytest.approx(2.0)
  assert audit.exposure(scores, 7) == pytest.approx(0.0)
  # ties favour the secret
  assert audit.secret_rank(np.array([1.0, 1.0, 2.0]), 1) == 1


def test_exposure_skewnorm_recovers_known_tail():
  """log-losses drawn from a known skew-normal: the extrapolated exposure of
  a far-tail point matches the exact -log2 CDF of that distribution."""
  a, loc, scale = 4.0, 1.0, 0.8
  rng = np.random.default_rng(0)
  logl = stats.skewnorm.rvs(a, loc, scale, size=4000, random_state=rng)
  secret_log = loc - 1.0 * scale
  want = -stats.skewnorm.logcdf(secret_log, a, loc, scale) / math.log(2)
  got = audit.exposure_skewnorm(np.exp(logl), math.exp(secret_log))
  assert want > 10          # beyond what a sample of 4000 can rank
  assert got == pytest.approx(want, rel=0.25)
  raw = audit.exposure_skewnorm(logl, secret_log, transform="none")
  assert raw == pytest.approx(got, rel=1e-6)
  with pytest.raises(ValueError, match="positive"):
    audit.exposure_skewnorm(np.r_[-1.0, np.exp(logl)], 1.0)


def test_candidate_losses_batches():
  p = audit.CanaryPattern("code {d} {d}", label=1)
  vocab = tjdata.WordVocab.build(["code 0 1 2 3 4 5 6 7 8 9"], max_size=50)
  ct = audit.tokenize_canary(p, vocab, 4)
  calls = []

  def loss_fn(ids, mask, labels):
    calls.append(ids.shape)
    assert np.all(labels == 1)
    # a fake loss: the sum of the two secret token ids
    return ids[:, 1].astype(float) + ids[:, 2]

  got = audit.candidate_losses(loss_fn, ct, batch_size=32)
  assert len(got) == 100 and set(calls) == {(32, 4)}
  want = [ct.symbol_ids[0, s[0]] + ct.symbol_ids[1, s[1]]
          for s in p.all_secrets()]
  np.testing.assert_allclose(got, want)
