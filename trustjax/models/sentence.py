"""Sentence embeddings from a frozen BERT: WordPiece ids, mean pool, L2 norm.

`sentence_embeddings(model, tokenizer, texts)` returns what
sentence-transformers returns for all-MiniLM-L6-v2 (Reimers & Gurevych,
2019, "Sentence-BERT"): the last hidden state averaged over real tokens
([CLS] and [SEP] included), then L2-normalised. The encoder and its
vocabulary are public, so features computed with them spend no privacy
budget; a DP model is then trained on the features.

On CPU the cost is the forward pass, so texts are sorted by token count and
each batch is padded only to a bucketed length (`bucket_length`): short
sentences are not padded to `max_len`, and only a handful of shapes compile.
"""

from __future__ import annotations

import functools
import os
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from trustjax.models.bert import BertEncoder
from trustjax.models.bert_io import load_bert
from trustjax.models.bert_io import minilm_path
from trustjax.models.pooling import masked_mean

TOKENIZER_NAME = "tokenizer.json"


def _check_texts(texts: Sequence[str], where: str) -> list[str]:
  if isinstance(texts, (str, bytes)):
    raise ValueError(f"{where}: texts must be a sequence of strings, got a "
                     "single string; wrap it in a list")
  texts = list(texts)
  for i, t in enumerate(texts):
    if not isinstance(t, str):
      raise ValueError(f"{where}: texts[{i}] is a {type(t).__name__}, not a "
                       "str")
  return texts


class WordPieceEncoder:
  """A BERT WordPiece tokenizer read from a model directory's tokenizer.json.

  `encode(texts, max_len)` gives the ids HF's tokenizer gives with
  `truncation=True, max_length=max_len` ([CLS] ... [SEP], the text truncated
  so the whole row fits in max_len), padded on the right with the pad id.
  The padding and truncation stored in tokenizer.json (all-MiniLM-L6-v2's
  pads everything to 128) are switched off: rows are padded here, to the
  length the caller needs.
  """

  def __init__(self, path: str):
    """`path`: a directory holding tokenizer.json, or the file itself."""
    path = os.fspath(path)
    file = (os.path.join(path, TOKENIZER_NAME) if os.path.isdir(path)
            else path)
    if not os.path.exists(file):
      raise FileNotFoundError(f"WordPieceEncoder: tokenizer file not found: "
                              f"{file}")
    from tokenizers import Tokenizer  # pylint: disable=g-import-not-at-top
    try:
      self._tokenizer = Tokenizer.from_file(file)
    except Exception as e:  # tokenizers raises a bare Exception
      raise ValueError(f"{file}: not a tokenizers JSON file ({e})") from e
    self._tokenizer.no_padding()
    self._tokenizer.no_truncation()
    self.path = file
    pad = self._tokenizer.token_to_id("[PAD]")
    self.pad_id = 0 if pad is None else int(pad)
    # Room [CLS]/[SEP] (or whatever the post-processor adds) take in a row.
    self.num_special_tokens = self._tokenizer.num_special_tokens_to_add(
        is_pair=False)

  @property
  def vocab_size(self) -> int:
    return self._tokenizer.get_vocab_size(with_added_tokens=True)

  def token_ids(self, texts: Sequence[str], max_len: int = 128
                ) -> list[np.ndarray]:
    """Unpadded int32 id rows, special tokens included, each <= max_len."""
    texts = _check_texts(texts, "WordPieceEncoder")
    if not isinstance(max_len, int) or max_len <= self.num_special_tokens:
      raise ValueError(f"WordPieceEncoder: max_len={max_len!r} must be an int "
                       f"> {self.num_special_tokens} (the special tokens "
                       "alone take that many positions)")
    if not texts:
      return []
    self._tokenizer.enable_truncation(max_len)
    try:
      encodings = self._tokenizer.encode_batch(texts)
    finally:
      self._tokenizer.no_truncation()
    return [np.asarray(e.ids, np.int32) for e in encodings]

  def pad(self, rows: Sequence[np.ndarray], length: int,
          num_rows: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32[num_rows, length], mask bool[num_rows, length]) from
    unpadded rows (right padding with `pad_id`; extra rows all padding)."""
    num_rows = len(rows) if num_rows is None else num_rows
    ids = np.full((num_rows, length), self.pad_id, np.int32)
    mask = np.zeros((num_rows, length), bool)
    for i, r in enumerate(rows):
      ids[i, :len(r)] = r
      mask[i, :len(r)] = True
    return ids, mask

  def encode(self, texts: Sequence[str], max_len: int = 128
             ) -> tuple[np.ndarray, np.ndarray]:
    """(ids int32[N,T], mask bool[N,T]), T = the longest row (<= max_len).

    Row i is `[CLS] wordpieces(texts[i]) [SEP]` truncated to max_len, then
    `pad_id`; mask is True on real tokens.
    """
    rows = self.token_ids(texts, max_len)
    return self.pad(rows, max((len(r) for r in rows), default=0))


def bucket_length(n: int, max_len: int) -> int:
  """Padded length for a batch whose longest row has n tokens.

  The next multiple of 4 up to 16, of 8 up to 32, of 16 up to 64, then the
  next power of two, capped at max_len: at most 11 shapes for max_len=512.
  On CLINC150's 15,100 training utterances (11 tokens on average) batches
  of 256 sorted rows pad to 1.17x the real tokens (powers of two: 1.45x;
  padding to 128: 11.6x).
  """
  if n <= 16:
    b = -(-n // 4) * 4
  elif n <= 32:
    b = -(-n // 8) * 8
  elif n <= 64:
    b = -(-n // 16) * 16
  else:
    b = 1 << (n - 1).bit_length()
  return max(1, min(b, max_len))


@functools.partial(jax.jit, static_argnames=("graphdef", "normalize"))
def _pooled(graphdef, state, ids, mask, normalize):
  model = nnx.merge(graphdef, state)
  emb = masked_mean(model(ids, mask), mask)
  if normalize:
    # torch.nn.functional.normalize(p=2, eps=1e-12), as sentence-transformers.
    norm = jnp.linalg.norm(emb, axis=-1, keepdims=True)
    emb = emb / jnp.maximum(norm, 1e-12)
  return emb


def sentence_embeddings(model: BertEncoder, tokenizer: WordPieceEncoder,
                        texts: Sequence[str], *, batch_size: int = 256,
                        max_len: int = 128, normalize: bool = True
                        ) -> np.ndarray:
  """Mean-pooled (and L2-normalised) sentence embeddings f32[N, hidden].

  Row i is `masked_mean(model(ids_i, mask_i), mask_i)` over the real tokens
  of `texts[i]` ([CLS] and [SEP] included, truncated to max_len), divided by
  its L2 norm when `normalize`: sentence-transformers' output for
  all-MiniLM-L6-v2 (whose max_seq_length is 256; pass max_len=256 for
  identical results on longer texts). Rows are in the order of `texts`; row i
  depends on texts[i] only (batching and padding do not change it beyond
  float32 rounding).

  Args:
    model: a BertEncoder (e.g. `load_bert(minilm_path())`).
    tokenizer: the model's WordPieceEncoder.
    texts: N strings.
    batch_size: rows per forward pass.
    max_len: tokens per text at most, <= max_position_embeddings.
    normalize: L2-normalise each row.
  """
  texts = _check_texts(texts, "sentence_embeddings")
  if not isinstance(model, BertEncoder):
    raise ValueError(f"sentence_embeddings: model must be a BertEncoder, got "
                     f"{type(model).__name__}")
  if not isinstance(batch_size, int) or batch_size < 1:
    raise ValueError(f"sentence_embeddings: batch_size={batch_size!r} must be "
                     "a positive int")
  limit = model.config.max_position_embeddings
  if not isinstance(max_len, int) or max_len > limit:
    raise ValueError(f"sentence_embeddings: max_len={max_len!r} must be an "
                     f"int <= max_position_embeddings={limit}")
  rows = tokenizer.token_ids(texts, max_len)
  out = np.zeros((len(rows), model.config.hidden_size), np.float32)
  if not rows:
    return out
  graphdef, state = nnx.split(model)
  order = np.argsort([len(r) for r in rows], kind="stable")
  pending = []
  for start in range(0, len(order), batch_size):
    idx = order[start:start + batch_size]
    length = bucket_length(max(len(rows[i]) for i in idx), max_len)
    # A short final batch is padded to a power of two, not to batch_size.
    num_rows = min(batch_size, 1 << (len(idx) - 1).bit_length())
    ids, mask = tokenizer.pad([rows[i] for i in idx], length, num_rows)
    pending.append((idx, _pooled(graphdef, state, ids, mask, normalize)))
  for idx, emb in pending:
    out[idx] = np.asarray(emb)[:len(idx)]
  return out


def load_sentence_encoder(path: str | None = None
                          ) -> tuple[BertEncoder, WordPieceEncoder]:
  """(BertEncoder, WordPieceEncoder) from a local HF BERT directory holding
  config.json, model.safetensors and tokenizer.json; default `minilm_path()`
  (all-MiniLM-L6-v2, 384-dimensional embeddings)."""
  path = minilm_path() if path is None else os.fspath(path)
  return load_bert(path), WordPieceEncoder(path)
