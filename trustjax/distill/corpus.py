"""Gendered training text for counterfactual distillation: BOLD + Shakespeare.

* Documents: BOLD Wikipedia sentences (Dhamala et al., FAccT 2021; gender and
  profession domains) and Tiny Shakespeare speeches.
* Held-out entities: a seeded fraction of BOLD entities (persons in the
  gender domain, profession titles in the profession domain) is removed from
  training. Their Wikipedia sentences are the held-out perplexity text and
  their BOLD prompts the generation prompts, so the models never saw the
  people they are prompted with.
* Vocabulary (`CorpusVocab`): GPT-2 BPE ids restricted to those seen at least
  `min_count` times in the training documents (and their counterfactuals),
  plus the swap partner of every kept gendered id, plus EOS and UNK, renumbered
  0..V-1 (0 = EOS, 1 = UNK). This keeps the softmax small on a CPU. The
  GPT-2 token permutation is remapped into the small ids
  (`remap_permutation`): a pair stays swapped iff both ids are kept, so the
  result is still an involution.
* Rows (`pack_rows`): documents (each followed by EOS) are packed greedily,
  whole, into rows of `seq_len` tokens (a longer document is cut); the rest
  of a row is padding (mask 0). The counterfactual of a row is the packed
  swap of the same documents, so "swap with probability p" replaces a row by
  its own counterfactual.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Sequence

import numpy as np

EOS_LOCAL, UNK_LOCAL = 0, 1
GPT2_EOS = 50256


@dataclasses.dataclass
class Corpus:
  train_docs: list[str]
  heldout_docs: list[str]
  prompts: dict[str, list[str]]     # text, domain, group, name
  num_train_entities: int
  num_heldout_entities: int
  source: str


def _read_bold(data_dir: str | None, domain: str, kind: str) -> dict:
  root = data_dir or os.environ.get("TRUSTJAX_DATA_DIR", "")
  path = os.path.join(root, "bold", f"{domain}_{kind}.json")
  if not os.path.exists(path):
    raise FileNotFoundError(
        f"BOLD file not found: {path}; set data.data_dir or TRUSTJAX_DATA_DIR "
        "to a folder holding bold/ (github.com/amazon-science/bold)")
  with open(path, encoding="utf-8") as f:
    return json.load(f)


def _read_shakespeare(data_dir: str | None) -> list[str]:
  root = data_dir or os.environ.get("TRUSTJAX_DATA_DIR", "")
  path = os.path.join(root, "tinyshakespeare", "input.txt")
  if not os.path.exists(path):
    raise FileNotFoundError(f"Tiny Shakespeare not found: {path}")
  with open(path, encoding="utf-8") as f:
    text = f.read()
  # One document per speech ("SPEAKER:\nlines", blank-line separated).
  return [s.strip() for s in text.split("\n\n") if s.strip()]


def build_corpus(data_dir: str | None = None, *, heldout_fraction: float = 0.2,
                 seed: int = 0, shakespeare_speeches: int = -1,
                 max_bold_entities: int = 0) -> Corpus:
  """BOLD (gender + profession) split by entity, plus Tiny Shakespeare.

  Args:
    data_dir: folder holding bold/ and tinyshakespeare/ (default
      $TRUSTJAX_DATA_DIR).
    heldout_fraction: fraction of entities of every BOLD group held out.
    seed: of the entity split.
    shakespeare_speeches: -1 all, 0 none, k > 0 the first k speeches.
    max_bold_entities: > 0 keeps the first k entities (sorted) of each group
      before splitting (small runs and tests).
  """
  if not 0 < heldout_fraction < 1:
    raise ValueError(f"heldout_fraction={heldout_fraction} must be in (0, 1)")
  rng = np.random.default_rng([seed, 8])
  train, held = [], []
  prompts = {"text": [], "domain": [], "group": [], "name": []}
  n_train = n_held = 0
  for domain in ("gender", "profession"):
    wiki = _read_bold(data_dir, domain, "wiki")
    pr = _read_bold(data_dir, domain, "prompt")
    for group in sorted(wiki):
      names = sorted(wiki[group])
      if max_bold_entities:
        names = names[:max_bold_entities]
      k = max(1, int(round(heldout_fraction * len(names))))
      out = set(rng.permutation(len(names))[:k].tolist())
      for i, name in enumerate(names):
        if i in out:
          n_held += 1
          held += wiki[group][name]
          for p in pr.get(group, {}).get(name, []):
            prompts["text"].append(p)
            prompts["domain"].append(domain)
            prompts["group"].append(group)
            prompts["name"].append(name)
        else:
          n_train += 1
          train += wiki[group][name]
  source = "BOLD wiki (gender+profession)"
  if shakespeare_speeches:
    sp = _read_shakespeare(data_dir)
    train += sp if shakespeare_speeches < 0 else sp[:shakespeare_speeches]
    source += " + Tiny Shakespeare"
  return Corpus(train, held, prompts, n_train, n_held, source)


class CorpusVocab:
  """GPT-2 ids restricted to a corpus, renumbered (see module docstring).

  `gpt2_ids[i]` is the GPT-2 id of small id i (UNK has -1).
  """

  def __init__(self, gpt2_ids: Sequence[int]):
    self.gpt2_ids = np.asarray(gpt2_ids, np.int64)
    if self.gpt2_ids[EOS_LOCAL] != GPT2_EOS or self.gpt2_ids[UNK_LOCAL] != -1:
      raise ValueError("CorpusVocab: ids 0 and 1 must be EOS and UNK")
    self._lookup = np.full(GPT2_EOS + 1, UNK_LOCAL, np.int32)
    self._lookup[self.gpt2_ids[2:]] = np.arange(2, len(self.gpt2_ids))
    self._lookup[GPT2_EOS] = EOS_LOCAL

  def __len__(self) -> int:
    return len(self.gpt2_ids)

  @classmethod
  def build(cls, token_lists: Sequence[Sequence[int]], perm_gpt2: np.ndarray,
            min_count: int = 1) -> "CorpusVocab":
    counts = np.zeros(GPT2_EOS + 1, np.int64)
    for t in token_lists:
      np.add.at(counts, np.asarray(t, np.int64), 1)
    keep = counts >= max(1, min_count)
    keep[GPT2_EOS] = False
    keep |= keep[perm_gpt2]   # partners of kept gendered ids
    ids = np.nonzero(keep)[0]
    return cls([GPT2_EOS, -1] + ids.tolist())

  def to_local(self, gpt2_ids) -> np.ndarray:
    return self._lookup[np.asarray(gpt2_ids, np.int64)]

  def to_gpt2(self, local_ids) -> np.ndarray:
    """GPT-2 ids of small ids (UNK -> -1)."""
    return self.gpt2_ids[np.asarray(local_ids, np.int64)]

  def remap_permutation(self, perm_gpt2: np.ndarray) -> np.ndarray:
    """int32[V] involution over small ids (pairs with both ids kept)."""
    v = len(self)
    out = np.arange(v, dtype=np.int32)
    g = self.gpt2_ids[2:]
    partner = perm_gpt2[g]
    local_partner = self._lookup[partner]
    ok = (partner != g) & (self.gpt2_ids[local_partner] == partner)
    idx = np.arange(2, v)
    out[idx[ok]] = local_partner[ok]
    return out

  def to_json(self) -> list[int]:
    return self.gpt2_ids.tolist()


class _Encoding:
  def __init__(self, ids, offsets):
    self.ids = ids
    self.offsets = offsets


class RemappedTokenizer:
  """GPT-2's tokenizer speaking a `CorpusVocab`'s small ids.

  For models trained by the distillation job on a restricted vocabulary:
  `encode(text)` returns an object with `.ids` (small ids; tokens outside
  the vocabulary become UNK) and GPT-2's `.offsets`; `decode(ids)` maps back
  to GPT-2 ids (UNK dropped) and decodes.
  """

  def __init__(self, base, vocab: CorpusVocab):
    self.base = base
    self.vocab = vocab

  def encode(self, text: str) -> _Encoding:
    enc = self.base.encode(text)
    return _Encoding([int(i) for i in self.vocab.to_local(enc.ids)],
                     list(enc.offsets))

  def decode(self, ids) -> str:
    g = self.vocab.to_gpt2(np.asarray(ids, np.int64))
    return self.base.decode([int(i) for i in g if i >= 0])


def tokenizer_for_model(model_dir: str, base=None):
  """The tokenizer a GPT-2 model dir was trained with.

  A distillation workdir keeps `vocab.json` (the GPT-2 id of each model id)
  next to `model/`; such models get a `RemappedTokenizer`. Any other dir
  (e.g. a downloaded HF `gpt2`) gets GPT-2's tokenizer.
  """
  import json
  import os
  from trustjax.models import gpt2_tokenizer
  base = base or gpt2_tokenizer()
  d = os.path.abspath(model_dir.rstrip("/"))
  for cand in (os.path.join(d, "vocab.json"),
               os.path.join(os.path.dirname(d), "vocab.json")):
    if os.path.exists(cand):
      with open(cand) as f:
        blob = json.load(f)
      if isinstance(blob, dict) and "gpt2_ids" in blob:
        return RemappedTokenizer(base, CorpusVocab(blob["gpt2_ids"]))
  return base


def pack_rows(token_lists: Sequence[Sequence[int]], seq_len: int
              ) -> tuple[np.ndarray, np.ndarray, list[list[int]]]:
  """Greedy whole-document packing.

  Returns (ids int32[R, seq_len], mask bool[R, seq_len], docs_of_row): each
  document is its tokens followed by EOS (local id 0), cut to seq_len.
  """
  rows: list[list[int]] = []
  members: list[list[int]] = []
  cur: list[int] = []
  cur_docs: list[int] = []
  for d, toks in enumerate(token_lists):
    doc = (list(toks) + [EOS_LOCAL])[:seq_len]
    if len(cur) + len(doc) > seq_len and cur:
      rows.append(cur)
      members.append(cur_docs)
      cur, cur_docs = [], []
    cur = cur + doc
    cur_docs.append(d)
  if cur:
    rows.append(cur)
    members.append(cur_docs)
  ids = np.full((len(rows), seq_len), EOS_LOCAL, np.int32)
  mask = np.zeros((len(rows), seq_len), bool)
  for i, r in enumerate(rows):
    ids[i, :len(r)] = r
    mask[i, :len(r)] = True
  return ids, mask, members


def pack_like(token_lists: Sequence[Sequence[int]], members: list[list[int]],
              seq_len: int) -> tuple[np.ndarray, np.ndarray]:
  """Rows holding the same documents as `members` (e.g. their swaps)."""
  ids = np.full((len(members), seq_len), EOS_LOCAL, np.int32)
  mask = np.zeros((len(members), seq_len), bool)
  for i, docs in enumerate(members):
    r: list[int] = []
    for d in docs:
      r += list(token_lists[d]) + [EOS_LOCAL]
    r = r[:seq_len]
    ids[i, :len(r)] = r
    mask[i, :len(r)] = True
  return ids, mask
