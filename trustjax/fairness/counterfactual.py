"""Counterfactual text: gendered word and first-name swaps, token permutations.

Counterfactual data augmentation (CDA; Lu et al. 2018, "Gender Bias in
Neural Natural Language Processing", arXiv:1807.11714; Zhao et al. 2018,
WinoBias) rewrites a text with every gendered word replaced by its partner
("he" <-> "she", "actor" <-> "actress", "John" <-> "Patricia"). Counterfactual
distillation (Gupta et al. 2022, "Mitigating Gender Bias in Distilled
Language Models via Counterfactual Role Reversal", Findings of ACL,
arXiv:2203.12574) also needs the swap as a map over token ids.

Contracts:
  * Swaps are whole-word (a word is a maximal run of letters, digits, `_`
    and apostrophes; "there", "history", "shelf" are never touched),
    bidirectional (male -> female and female -> male in one pass) and
    case-preserving (`he`->`she`, `He`->`She`, `HE`->`SHE`).
  * First names (a table of (male, female) pairs) are swapped only when
    written capitalised or in capitals (`John` -> `Patricia`); `john` is a
    word, not a name, and is left alone.
  * "her" is both the object ("saw her") and the possessive ("her book"), so
    its partner is decided by the word that follows (THE HER RULE): when the
    next word, separated by whitespace only, exists and is not a function
    word (`_FUNCTION_WORDS`: determiners, pronouns, prepositions,
    conjunctions, auxiliaries), "her" is possessive and becomes "his";
    otherwise (end of text, punctuation, a function word) it is the object
    and becomes "him". Symmetrically "his" becomes "her" before a content
    word and "hers" otherwise ("the book is his." -> "... hers."), "him" ->
    "her", "hers" -> "his". Swapping twice returns the original text
    whenever the rule reads "her" the same way as the original pronoun was
    used; it misreads e.g. "gave her flowers" (-> "gave his flowers").
  * Word tables map every word to exactly one partner; a file that maps a
    word to two partners is refused (`ValueError` naming the file and the
    entry). The her/his/him/hers pairs found in files are accepted and
    handled by the rule above.

The default table (`_default_gender_pairs.py`) was built from the shared
WinoBias and debiaswe lists and cleaned (its docstring lists every edit).
"""

from __future__ import annotations

import json
import os
import re
from typing import Iterable, Sequence

import numpy as np

from trustjax.fairness import _default_gender_pairs as _defaults

# Pair files read when `load_gender_pairs` is given a directory (the layout of
# the shared gender_words/ folder); other files there are not pair lists.
PAIR_FILES = ("winobias_generalized_swaps.txt",
              "winobias_extra_gendered_words.txt",
              "debiaswe_definitional_pairs.json",
              "debiaswe_equalize_pairs.json")

HER_WORDS = frozenset(("her", "his", "him", "hers"))
# Pairs among HER_WORDS that files may contain: all are covered by the rule.
_RULE_PAIRS = frozenset(frozenset(p) for p in (
    ("his", "her"), ("him", "her"), ("hers", "his"), ("hers", "him")))

_FUNCTION_WORDS = frozenset("""
a an the this that these those some any no every each either neither
to and or but nor so yet in on at with for from by as of off up down out over
into onto upon about after before since until till than then when while if
because though although whether where why how what who whom whose which
is was were are be been being am will would could should can may might must
shall do does did has have had not again too also back away all both once
i you he she it we they me him her us them my your our their its his hers
there here now just only even still ever never always yesterday today
""".split())

_WORD_CHARS = r"\w'"


def _pair_entries(path: str) -> list[tuple[str, str, str]]:
  """(a, b, where) entries of one pair file; `where` names file and entry."""
  if not os.path.exists(path):
    raise FileNotFoundError(f"gender word list not found: {path}")
  out = []
  if path.endswith(".json"):
    with open(path, encoding="utf-8") as f:
      try:
        data = json.load(f)
      except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from e
    if not isinstance(data, list):
      raise ValueError(f"{path}: expected a JSON list of [male, female] "
                       f"pairs, got {type(data).__name__}")
    for i, p in enumerate(data):
      if (not isinstance(p, (list, tuple)) or len(p) != 2
          or not all(isinstance(w, str) for w in p)):
        raise ValueError(f"{path}: entry {i} is {p!r}; expected a pair of "
                         "two strings")
      out.append((p[0], p[1], f"{path} entry {i} {list(p)!r}"))
  else:
    with open(path, encoding="utf-8") as f:
      for i, line in enumerate(f, 1):
        fields = line.split()
        if not fields or line.lstrip().startswith("#"):
          continue
        if len(fields) != 2:
          raise ValueError(f"{path} line {i}: {line.rstrip()!r} has "
                           f"{len(fields)} fields; expected two "
                           "whitespace-separated words 'male female'")
        out.append((fields[0], fields[1],
                    f"{path} line {i} {line.strip()!r}"))
  return out


def _check_pairs(entries: Iterable[tuple[str, str, str]], *, lower: bool
                 ) -> list[tuple[str, str]]:
  """Validated, de-duplicated pairs (first orientation wins)."""
  partner: dict[str, tuple[str, str]] = {}
  pairs: list[tuple[str, str]] = []
  for a, b, where in entries:
    if lower:
      a, b = a.lower(), b.lower()
    if "_" in a or "_" in b:
      continue  # multi-word phrase (word2vec style); swaps are single words
    if not a or not b or a == b:
      raise ValueError(f"{where}: a pair needs two different non-empty "
                       f"words, got ({a!r}, {b!r})")
    if a in HER_WORDS or b in HER_WORDS:
      if frozenset((a, b)) in _RULE_PAIRS:
        continue  # resolved by the her rule, not by the table
      raise ValueError(f"{where}: ({a!r}, {b!r}) pairs a word of "
                       f"{sorted(HER_WORDS)}, which the her rule owns; only "
                       "his/her, him/her and hers/his are accepted")
    for w, other in ((a, b), (b, a)):
      if w in partner and partner[w][0] != other:
        raise ValueError(
            f"{where}: maps {w!r} to {other!r}, but {partner[w][1]} already "
            f"maps it to {partner[w][0]!r}; every word must have exactly one "
            "partner (fix or drop one of the two entries)")
    if a in partner:
      continue  # the same pair again (possibly reversed)
    partner[a] = (b, where)
    partner[b] = (a, where)
    pairs.append((a, b))
  return pairs


def load_gender_pairs(path_or_dir: str | os.PathLike | None = None
                      ) -> list[tuple[str, str]]:
  """Gendered word pairs (male, female), lower-cased.

  Args:
    path_or_dir: None for the library's cleaned default table; a `.txt`/
      `.tsv` file of lines `male female` (whitespace separated; `#` comments;
      both orientations may be listed); a `.json` list of [male, female]
      pairs; or a directory, whose files named in `PAIR_FILES` are read in
      that order (at least one must exist). Entries with `_` (phrases) are
      skipped. Orientation: the first occurrence of a pair wins.

  Returns:
    [(male, female), ...] with every word in exactly one pair (her/his/him/
    hers excluded: see the her rule in the module docstring).

  Raises:
    FileNotFoundError: naming the missing path.
    ValueError: naming the file and entry that maps a word to a second
      partner, or a malformed entry.
  """
  if path_or_dir is None:
    return list(_defaults.GENDER_PAIRS)
  path = os.fspath(path_or_dir)
  if os.path.isdir(path):
    files = [os.path.join(path, f) for f in PAIR_FILES
             if os.path.exists(os.path.join(path, f))]
    if not files:
      raise FileNotFoundError(f"no gender pair file in directory {path}; "
                              f"expected one of {PAIR_FILES}")
  else:
    files = [path]
  entries = [e for f in files for e in _pair_entries(f)]
  return _check_pairs(entries, lower=True)


def load_name_pairs(path: str | os.PathLike | None = None
                    ) -> list[tuple[str, str]]:
  """First-name pairs (male, female), capitalised as written.

  None: the default table of common US first names. A file: the same
  formats as `load_gender_pairs` (a name must map to one partner).
  """
  if path is None:
    return list(_defaults.NAME_PAIRS)
  entries = _pair_entries(os.fspath(path))
  return _check_pairs(entries, lower=False)


def _pronoun_words() -> tuple[set[str], set[str]]:
  return {"he", "him", "his", "himself"}, {"she", "her", "hers", "herself"}


def _with_undotted(words: set[str]) -> set[str]:
  return words | {w.rstrip(".") for w in words}   # "mr." also as "mr"


def male_words(pairs: Sequence[tuple[str, str]] | None = None) -> set[str]:
  """Lower-case male words of `pairs` (default table) plus he/him/his
  (names excluded); abbreviations also without their final period."""
  pairs = load_gender_pairs() if pairs is None else pairs
  return _with_undotted({m.lower() for m, _ in pairs} | _pronoun_words()[0])


def female_words(pairs: Sequence[tuple[str, str]] | None = None) -> set[str]:
  """Lower-case female words of `pairs` (default table) plus she/her/hers
  (names excluded); abbreviations also without their final period."""
  pairs = load_gender_pairs() if pairs is None else pairs
  return _with_undotted({f.lower() for _, f in pairs} | _pronoun_words()[1])


def _match_case(src: str, dst: str) -> str:
  """`dst` written in the case pattern of `src` (lower, UPPER or Title)."""
  if src.islower():
    return dst.lower()
  letters = [c for c in src if c.isalpha()]
  if len(letters) > 1 and all(c.isupper() for c in letters):
    return dst.upper()
  if src[:1].isupper():
    return dst[:1].upper() + dst[1:]
  return dst


_NEXT_WORD = re.compile(r"[ \t]+([\w']+)")


class CounterfactualSwapper:
  """Bidirectional, case-preserving swaps of gendered words and first names.

  Args:
    pairs: (male, female) word pairs (lower case); None: the default table
      (`load_gender_pairs()`).
    names: True: also swap the default first-name table; False: no names; or
      a sequence of (male, female) name pairs.

  `swap(text)` rewrites every gendered word of `text` in one pass (see the
  module docstring for the her rule); `gendered_words(text)` lists the
  words it would change, in order; `has_gendered_word(text)` says whether
  there is one.
  """

  def __init__(self, pairs: Sequence[tuple[str, str]] | None = None,
               names: bool | Sequence[tuple[str, str]] = True):
    pairs = load_gender_pairs() if pairs is None else list(pairs)
    checked = _check_pairs(((a, b, f"pairs[{i}]") for i, (a, b)
                            in enumerate(pairs)), lower=True)
    self.pairs = checked
    self._words: dict[str, str] = {}
    for a, b in checked:
      self._words[a], self._words[b] = b, a
    if names is True:
      name_pairs = load_name_pairs()
    elif names is False or names is None:
      name_pairs = []
    else:
      name_pairs = _check_pairs(((a, b, f"names[{i}]") for i, (a, b)
                                 in enumerate(names)), lower=False)
    self.name_pairs = name_pairs
    self._names: dict[str, str] = {}
    for a, b in name_pairs:
      self._names[a], self._names[b] = b, a
    alts = sorted(set(self._words) | set(HER_WORDS)
                  | {n.lower() for n in self._names}, key=len, reverse=True)
    self._pattern = re.compile(
        rf"(?<![{_WORD_CHARS}])(?:{'|'.join(re.escape(w) for w in alts)})"
        rf"(?![\w])", re.IGNORECASE)

  def _partner(self, m: re.Match) -> str | None:
    word = m.group(0)
    low = word.lower()
    if low in self._words:
      return _match_case(word, self._words[low])
    if low in HER_WORDS:
      nxt = _NEXT_WORD.match(m.string, m.end())
      possessive = nxt is not None and nxt.group(1).lower() not in (
          _FUNCTION_WORDS)
      if low == "her":
        dst = "his" if possessive else "him"
      elif low == "his":
        dst = "her" if possessive else "hers"
      else:
        dst = {"him": "her", "hers": "his"}[low]
      return _match_case(word, dst)
    if word in self._names:
      return self._names[word]
    if word.isupper():
      for form in (word.capitalize(), word.title()):
        if form in self._names:
          return self._names[form].upper()
    return None

  def swap(self, text: str) -> str:
    """`text` with every gendered word and name replaced by its partner."""
    def repl(m):
      p = self._partner(m)
      return m.group(0) if p is None else p
    return self._pattern.sub(repl, text)

  def gendered_words(self, text: str) -> list[str]:
    """The words of `text` that `swap` changes, in order of appearance."""
    return [m.group(0) for m in self._pattern.finditer(text)
            if self._partner(m) is not None]

  def has_gendered_word(self, text: str) -> bool:
    return any(self._partner(m) is not None
               for m in self._pattern.finditer(text))

  def token_permutation(self, tokenizer, vocab_size: int | None = None
                        ) -> np.ndarray:
    """`token_permutation` over this swapper's words and names."""
    return token_permutation(tokenizer, self.pairs, names=self.name_pairs,
                             vocab_size=vocab_size)


def _encode(tokenizer, text: str) -> list[int]:
  enc = tokenizer.encode(text)
  return list(getattr(enc, "ids", enc))


def token_permutation(tokenizer, pairs: Sequence[tuple[str, str]] | None = None,
                      *, names: bool | Sequence[tuple[str, str]] = True,
                      vocab_size: int | None = None) -> np.ndarray:
  """Token-id involution swapping the single-token gendered pairs.

  For every word pair (default table when `pairs` is None) in lower case and
  Capitalised form, and every name pair as written, each with and without
  a leading space (GPT-2 BPE gives "he" and " he" different ids), the two
  ids are exchanged when both sides encode to exactly one token. The her
  rule cannot be a permutation, so the token map uses his <-> her (the
  possessive reading; "his" is GPT-2's more frequent partner) and leaves
  "him" and "hers" fixed. A pair whose token is already taken by an earlier
  pair is skipped, so the result is always an involution.

  Args:
    tokenizer: a `tokenizers.Tokenizer` (GPT-2 BPE) or any object whose
      `encode(text)` returns ids (or an object with `.ids`).
    pairs: (male, female) words.
    names: True: the default first-name table; False: none; or name pairs.
    vocab_size: length of the result; default `tokenizer.get_vocab_size()`.

  Returns:
    perm int32[V]: perm[i] is the id of i's partner, perm[i] == i for
    non-gendered ids; perm[perm] == arange(V).
  """
  if pairs is None:
    pairs = load_gender_pairs()
  if names is True:
    names = load_name_pairs()
  elif names is False or names is None:
    names = []
  if vocab_size is None:
    vocab_size = int(tokenizer.get_vocab_size())
  perm = np.arange(vocab_size, dtype=np.int32)
  variants = []
  for a, b in list(pairs) + [("his", "her")]:
    variants += [(a, b), (a.capitalize(), b.capitalize())]
  variants += list(names)
  for a, b in variants:
    for prefix in ("", " "):
      ia, ib = _encode(tokenizer, prefix + a), _encode(tokenizer, prefix + b)
      if len(ia) != 1 or len(ib) != 1:
        continue
      i, j = ia[0], ib[0]
      if i == j or not (0 <= i < vocab_size and 0 <= j < vocab_size):
        continue
      if perm[i] != i or perm[j] != j:
        continue
      perm[i], perm[j] = j, i
  return perm
