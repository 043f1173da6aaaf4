"""Contextual word embeddings from real sentences, for CEAT.

Guo & Caliskan (AIES 2021) embed each test word in many real sentences that
contain it, taking the model's last layer at the word's LAST sub-token (their
`generate_ebd_*.py`: GPT-2 tokenised with a prefix space,
`hidden_states[-1][0, idx]` where idx is the position of the word's last
BPE token). This module does the same for any model:

1. `find_sentences(corpus, words)`: sentences containing each word as a
   whole word (default case-sensitive, first `max_per_word` in corpus order,
   as the reference takes the first 1000). `bold_sentences()` reads the BOLD
   Wikipedia sentences (`bold/*_wiki.json`) as a corpus.
2. `contextual_embeddings(embed_fn, tokenizer, sentences)`: one vector per
   (word, sentence). `embed_fn(ids int32[B,T], mask int32[B,T]) ->
   f32[B,T,D]` is any batched (ideally jitted) function, e.g.
   `gpt2_embed_fn(model)`. Sequences are right-padded into length buckets
   (multiples of `bucket`) and fixed batch sizes, so a jitted `embed_fn`
   compiles once per bucket. With `causal=True` (GPT-2) tokens after the
   word are dropped: a causal model's state at the word does not depend on
   them, so the vector is the same and the call cheaper. Sentences longer
   than `max_len` tokens keep the `max_len` tokens ending at the word
   (causal) or a window around it (not causal).
"""

from __future__ import annotations

import glob
import json
import os
import re
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

EmbedFn = Callable[[np.ndarray, np.ndarray], Any]
_TOKEN = re.compile(r"[\w][\w\-']*[\w]|[\w]", re.UNICODE)


def _word_pattern(word: str, case_sensitive: bool) -> re.Pattern:
  return re.compile(r"(?<![\w\-])" + re.escape(word) + r"(?![\w\-])",
                    0 if case_sensitive else re.IGNORECASE)


def find_sentences(corpus: Iterable[str], words: Iterable[str], *,
                   max_per_word: int | None = 1000,
                   case_sensitive: bool = True) -> dict[str, list[str]]:
  """word -> sentences of `corpus` containing it as a whole word.

  A whole word: not preceded or followed by a letter, digit, '_' or '-'
  ("he" matches "he said" and "he's", not "the" or "she"). Words absent
  from the corpus map to []. At most `max_per_word` sentences per word, the
  first ones in corpus order (None: all).
  """
  words = list(dict.fromkeys(words))
  out = {w: [] for w in words}
  pats = {w: _word_pattern(w, case_sensitive) for w in words}
  key = (lambda s: s) if case_sensitive else str.lower
  index: dict[str, list[str]] = {}
  for w in words:
    index.setdefault(key(w), []).append(w)
  for sent in corpus:
    cands = set()
    for tok in _TOKEN.findall(sent):
      for part in {tok, *tok.split("'")}:
        cands.update(index.get(key(part), ()))
    for w in cands:
      if (max_per_word is None or len(out[w]) < max_per_word) and \
          pats[w].search(sent):
        out[w].append(sent)
  return out


def bold_sentences(data_dir: str | None = None,
                   domains: Sequence[str] = ("gender", "profession")
                   ) -> list[str]:
  """All BOLD Wikipedia sentences of `domains` (group, name, file order).

  Args:
    data_dir: a folder holding `{domain}_wiki.json`, or a root holding
      `bold/`; None: `$TRUSTJAX_DATA_DIR`.
  """
  root = data_dir or os.environ.get("TRUSTJAX_DATA_DIR")
  if not root:
    raise FileNotFoundError("bold_sentences: no data_dir and "
                            "TRUSTJAX_DATA_DIR is not set")
  folder = root if glob.glob(os.path.join(root, "*_wiki.json")) else \
      os.path.join(root, "bold")
  out = []
  for d in domains:
    path = os.path.join(folder, f"{d}_wiki.json")
    if not os.path.exists(path):
      raise FileNotFoundError(f"BOLD Wikipedia file not found: {path}")
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
    for group in sorted(raw):
      for name in sorted(raw[group]):
        out.extend(s for s in raw[group][name] if isinstance(s, str))
  return out


def _tokenize(tokenizer, text: str):
  if hasattr(tokenizer, "encode"):       # tokenizers.Tokenizer
    enc = tokenizer.encode(text)
    return list(enc.ids), list(enc.offsets)
  ids, offsets = tokenizer(text)
  return list(ids), list(offsets)


def locate_word(tokenizer, sentence: str, word: str, *,
                case_sensitive: bool = True, prefix_space: bool = True
                ) -> tuple[list[int], int]:
  """(token ids, index of the word's last sub-token) at its first
  occurrence.

  `tokenizer` is a `tokenizers.Tokenizer` (uses `.encode(text).ids` and
  `.offsets`) or a callable `text -> (ids, char offsets [(start, end)])`.
  With `prefix_space` the text is encoded as " " + sentence (GPT-2 as in
  the reference, so a sentence-initial word is tokenised like any other).
  Raises ValueError if the word does not occur.
  """
  m = _word_pattern(word, case_sensitive).search(sentence)
  if m is None:
    raise ValueError(f"word {word!r} does not occur in sentence "
                     f"{sentence[:80]!r}")
  shift = 1 if prefix_space else 0
  ids, offsets = _tokenize(tokenizer, " " * shift + sentence)
  last_char = m.end() - 1 + shift
  for i, (s, e) in enumerate(offsets):
    if s <= last_char < e:
      return ids, i
  raise ValueError(f"no token covers the end of {word!r} in "
                   f"{sentence[:80]!r} (offsets {offsets[:8]}...)")


def _window(n: int, pos: int, max_len: int, causal: bool) -> tuple[int, int]:
  if causal:
    return max(0, pos + 1 - max_len), pos + 1
  if n <= max_len:
    return 0, n
  start = min(max(0, pos - max_len // 2), n - max_len)
  return start, start + max_len


def contextual_embeddings(embed_fn: EmbedFn, tokenizer,
                          sentences: Mapping[str, Sequence[str]], *,
                          batch_size: int = 32, max_len: int = 64,
                          causal: bool = True, prefix_space: bool = True,
                          case_sensitive: bool = True, bucket: int = 16,
                          pad_id: int = 0) -> dict[str, np.ndarray]:
  """word -> f32[n_w, D]: the state of `embed_fn` at the word's last
  sub-token, one row per sentence (in the given order).

  Args:
    embed_fn: `(ids int32[B,T], mask int32[B,T]) -> [B,T,D]`, right padding
      (mask 0) never changes the real positions' outputs.
    tokenizer: see `locate_word`.
    sentences: word -> sentences containing it (`find_sentences`).
    batch_size: B of every call (the last batch is padded with copies).
    max_len: longest token window fed to the model.
    causal: drop tokens after the word (exact for causal models).
    bucket: T is rounded up to a multiple of this (fewer compilations).
  """
  if batch_size < 1 or max_len < 1 or bucket < 1:
    raise ValueError(f"batch_size={batch_size}, max_len={max_len}, "
                     f"bucket={bucket} must all be >= 1")
  items = []   # (word, row, ids, pos)
  for w, sents in sentences.items():
    for r, s in enumerate(sents):
      ids, pos = locate_word(tokenizer, s, w, case_sensitive=case_sensitive,
                             prefix_space=prefix_space)
      a, b = _window(len(ids), pos, max_len, causal)
      items.append((w, r, ids[a:b], pos - a))
  out_rows: dict[str, list] = {w: [None] * len(s) for w, s in
                               sentences.items()}
  order = sorted(range(len(items)), key=lambda i: len(items[i][2]))
  for start in range(0, len(order), batch_size):
    chunk = [items[i] for i in order[start:start + batch_size]]
    longest = max(len(c[2]) for c in chunk)    # <= max_len (windowed)
    t = max(longest, min(-(-longest // bucket) * bucket, max_len))
    ids = np.full((batch_size, t), pad_id, np.int32)
    mask = np.zeros((batch_size, t), np.int32)
    pos = np.zeros(batch_size, np.int32)
    for j in range(batch_size):
      _, _, toks, p = chunk[min(j, len(chunk) - 1)]
      ids[j, :len(toks)] = toks
      mask[j, :len(toks)] = 1
      pos[j] = p
    hidden = np.asarray(embed_fn(ids, mask))
    vecs = hidden[np.arange(batch_size), pos]
    for j, (w, r, _, _) in enumerate(chunk):
      out_rows[w][r] = vecs[j].astype(np.float32)
  dim = None
  result = {}
  for w, rows in out_rows.items():
    if rows:
      result[w] = np.stack(rows)
      dim = result[w].shape[1]
  for w, rows in out_rows.items():
    if not rows:
      result[w] = np.zeros((0, dim or 0), np.float32)
  return result


def gpt2_embed_fn(model, *, layer: int | None = None) -> EmbedFn:
  """A jitted `embed_fn` from a `trustjax.models.gpt2.GPT2LMHeadModel`.

  `layer=None`: the final hidden states (after `ln_f`), the reference's
  `hidden_states[-1]`; an int: `hidden_states(all_layers=True)[layer]`
  (0 = embeddings). Position ids follow the mask (right padding: 0..n-1).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from flax import nnx  # pylint: disable=g-import-not-at-top
  graphdef, state = nnx.split(model)

  @jax.jit
  def run(state, ids, mask):
    m = nnx.merge(graphdef, state)
    if layer is None:
      return m.hidden_states(ids, attention_mask=mask)
    return m.hidden_states(ids, attention_mask=mask, all_layers=True)[layer]

  return lambda ids, mask: run(state, ids, mask)
