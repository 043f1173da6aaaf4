"""The embedded synthetic intent set: size, determinism, learnability."""

import collections

import numpy as np
import pytest

from trustjax.data import synthetic_intents
from trustjax.data import tokenize_words


def test_shapes_and_labels():
  data = synthetic_intents(num_per_class=20, seed=0)
  k = data.num_classes
  assert k >= 21 and data.label_names[-1] == "oos" and data.oos_label == k - 1
  assert (len(data.train), len(data.val), len(data.test)) == (20 * k, 5 * k,
                                                              5 * k)
  np.testing.assert_array_equal(np.bincount(data.train.labels), [20] * k)
  assert "SYNTHETIC" in data.source
  no_oos = synthetic_intents(num_per_class=4, include_oos=False)
  assert no_oos.oos_label is None and "oos" not in no_oos.label_names
  with pytest.raises(ValueError, match="num_per_class"):
    synthetic_intents(num_per_class=0)


def test_deterministic():
  a, b = synthetic_intents(seed=5), synthetic_intents(seed=5)
  assert a.train.texts == b.train.texts and a.test.texts == b.test.texts
  assert synthetic_intents(seed=6).train.texts != a.train.texts


def _counts(data):
  counts = collections.defaultdict(collections.Counter)
  for text, y in zip(data.train.texts, data.train.labels):
    for w in set(tokenize_words(text)):
      counts[w][int(y)] += 1
  return counts


def test_learnable_by_bag_of_words_but_not_by_one_token():
  data = synthetic_intents(seed=0)
  counts = _counts(data)
  # Naive Bayes on word counts (independent numpy reference model).
  words = sorted(counts)
  index = {w: i for i, w in enumerate(words)}
  k = data.num_classes

  def bow(texts):
    x = np.zeros((len(texts), len(words)))
    for i, t in enumerate(texts):
      for w in tokenize_words(t):
        if w in index:
          x[i, index[w]] += 1
    return x

  x_train = bow(data.train.texts)
  per_class = np.stack([x_train[data.train.labels == c].sum(0) + 1
                        for c in range(k)])
  log_p = np.log(per_class / per_class.sum(1, keepdims=True))
  nb_acc = np.mean((bow(data.test.texts) @ log_p.T).argmax(1)
                   == data.test.labels)
  assert nb_acc > 0.9

  # Best single token: predict the majority class of the sentence's most
  # class-pure training token. Must be clearly worse than bag of words.
  def purity(w):
    c = counts.get(w)
    return max(c.values()) / sum(c.values()) if c else 0.0

  hits = []
  for text, y in zip(data.test.texts, data.test.labels):
    best = max(tokenize_words(text), key=purity)
    hits.append(best in counts and counts[best].most_common(1)[0][0] == y)
  assert np.mean(hits) < 0.8 < nb_acc
