"""Word-level vocabulary for classifiers, built from training texts only.

A vocabulary built from private training data reveals its words; DP jobs use
the public GPT-2 BPE instead (see trustjax.models.BPEEncoder) unless the user
explicitly accepts that.
"""

from __future__ import annotations

import collections
import json
import re
from typing import Iterable

import numpy as np

_WORD = re.compile(r"[\w']+|[^\w\s]", re.UNICODE)


def tokenize_words(text: str) -> list[str]:
  """Lowercased words and single punctuation marks."""
  return _WORD.findall(text.lower())


class WordVocab:
  """id 0 = padding, id 1 = unknown, then words by decreasing count."""

  pad_id = 0
  unk_id = 1

  def __init__(self, words: list[str]):
    self.words = ["<pad>", "<unk>"] + list(words)
    self.index = {w: i for i, w in enumerate(self.words)}

  @classmethod
  def build(cls, texts: Iterable[str], *, max_size: int,
            min_count: int = 1) -> "WordVocab":
    if max_size < 3:
      raise ValueError(f"max_size={max_size} must be >= 3 (pad, unk, one "
                       "word)")
    counts = collections.Counter(w for t in texts for w in tokenize_words(t))
    kept = sorted((w for w, c in counts.items() if c >= min_count),
                  key=lambda w: (-counts[w], w))[:max_size - 2]
    return cls(kept)

  def __len__(self) -> int:
    return len(self.words)

  def encode(self, texts: Iterable[str], max_len: int):
    """(ids int32[N,max_len], mask bool[N,max_len]); long texts truncated."""
    texts = list(texts)
    ids = np.zeros((len(texts), max_len), np.int32)
    mask = np.zeros((len(texts), max_len), bool)
    for i, t in enumerate(texts):
      toks = [self.index.get(w, self.unk_id)
              for w in tokenize_words(t)][:max_len]
      ids[i, :len(toks)] = toks
      mask[i, :len(toks)] = True
    return ids, mask

  def save(self, path: str) -> None:
    with open(path, "w") as f:
      json.dump({"words": self.words[2:]}, f)

  @classmethod
  def load(cls, path: str) -> "WordVocab":
    with open(path) as f:
      return cls(json.load(f)["words"])
