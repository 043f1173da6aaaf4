"""Counterfactual swaps, pair tables and the GPT-2 token permutation."""

import json
import os

import hypothesis
import hypothesis.strategies as st
import numpy as np
import pytest
from conftest import data_dir_or_skip

from trustjax.fairness import counterfactual as cf


@pytest.fixture(scope="module")
def swapper():
  return cf.CounterfactualSwapper()


@pytest.mark.parametrize("text,expected", [
    ("he", "she"), ("she", "he"), ("He left.", "She left."),
    ("his book", "her book"), ("her book", "his book"),
    ("Her book", "His book"), ("HE", "SHE"),
    ("I saw her.", "I saw him."), ("I saw him.", "I saw her."),
    ("She gave him the pen", "He gave her the pen"),
    ("The pen is his.", "The pen is hers."), ("It is hers", "It is his"),
    ("the actress and the actor", "the actor and the actress"),
    ("Mr. Smith, ma'am", "Mrs. Smith, sir"),
    ("the man's wife", "the woman's husband"),
    ("John met Mary", "Patricia met James"),
    ("her own mother", "his own father"),
])
def test_swaps(swapper, text, expected):
  assert swapper.swap(text) == expected
  assert swapper.swap(expected) == text


@pytest.mark.parametrize("text", [
    "there", "history", "shelf", "Theresa".lower(), "mankind", "sheath",
    "hermit", "these others", "mandate", "human", "john doe", "Herald",
    "Sonnet's end", "Heathers", "wifely", "Whistle"])
def test_words_inside_words_untouched(swapper, text):
  assert swapper.swap(text) == text
  assert not swapper.has_gendered_word(text)


def test_names_can_be_disabled():
  s = cf.CounterfactualSwapper(names=False)
  assert s.swap("John said he") == "John said she"
  assert cf.CounterfactualSwapper(names=[("Romeo", "Juliet")]).swap(
      "Romeo, Juliet") == "Juliet, Romeo"


def test_gendered_words_lists_in_order(swapper):
  assert swapper.gendered_words("He and his sister met Mary there") == [
      "He", "his", "sister", "Mary"]
  assert swapper.has_gendered_word("a queen")
  assert not swapper.has_gendered_word("a table near the window")


_FILLER = ["the", "a", "table", "went", "quickly", "green", "there", "shelf",
           "history", "of", "and", ",", "."]


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(st.lists(st.tuples(st.sampled_from(["word", "filler"]),
                                     st.integers(0, 10_000),
                                     st.sampled_from(["lower", "title", "upper"])),
                           min_size=1, max_size=12))
def test_swap_twice_is_identity_on_unambiguous_text(tokens):
  """Text without her/his/him/hers: swap is an involution (any case)."""
  s = cf.CounterfactualSwapper()
  words = [w for p in s.pairs for w in p]
  out = []
  for kind, k, case in tokens:
    w = words[k % len(words)] if kind == "word" else _FILLER[k % len(_FILLER)]
    w = {"lower": w, "title": w.capitalize(), "upper": w.upper()}[case]
    out.append(w)
  text = " ".join(out)
  swapped = s.swap(text)
  assert s.swap(swapped) == text
  # Independent reference: word-by-word dictionary lookup.
  partner = {a: b for a, b in s.pairs} | {b: a for a, b in s.pairs}
  ref = []
  for w in out:
    low = w.lower()
    if low in partner:
      p = partner[low]
      p = (p if w.islower() else p.upper()
           if w.isupper() and len([c for c in w if c.isalpha()]) > 1
           else p[:1].upper() + p[1:])
      ref.append(p)
    else:
      ref.append(w)
  assert swapped == " ".join(ref)


def test_default_table_is_consistent():
  pairs = cf.load_gender_pairs()
  words = [w for p in pairs for w in p]
  assert len(words) == len(set(words))
  assert not set(words) & cf.HER_WORDS
  male, female = cf.male_words(), cf.female_words()
  assert not male & female
  assert {"he", "him", "his", "man", "actor"} <= male
  assert {"she", "her", "hers", "woman", "actress"} <= female
  names = cf.load_name_pairs()
  assert len({n for p in names for n in p}) == 2 * len(names)


def test_file_with_word_mapped_to_two_partners_is_refused(tmp_path):
  path = tmp_path / "pairs.txt"
  path.write_text("king\tqueen\nactor actress\nqueen\tprince\n")
  with pytest.raises(ValueError) as e:
    cf.load_gender_pairs(str(path))
  msg = str(e.value)
  assert str(path) in msg and "line 3" in msg and "'queen'" in msg
  jpath = tmp_path / "pairs.json"
  jpath.write_text(json.dumps([["he", "she"], ["boy", "girl"],
                               ["lad", "girl"]]))
  with pytest.raises(ValueError, match=r"pairs\.json entry 2.*'girl'"):
    cf.load_gender_pairs(str(jpath))


def test_reversed_duplicates_and_her_pairs_are_accepted(tmp_path):
  path = tmp_path / "pairs.txt"
  path.write_text("king queen\nqueen king\nhis her\nhim her\nUncle Aunt\n")
  assert cf.load_gender_pairs(str(path)) == [("king", "queen"),
                                             ("uncle", "aunt")]


def test_missing_file_names_path(tmp_path):
  missing = str(tmp_path / "nope.txt")
  with pytest.raises(FileNotFoundError, match="nope.txt"):
    cf.load_gender_pairs(missing)
  with pytest.raises(FileNotFoundError, match=str(tmp_path)):
    cf.load_gender_pairs(str(tmp_path))


def test_malformed_line(tmp_path):
  path = tmp_path / "pairs.txt"
  path.write_text("king queen prince\n")
  with pytest.raises(ValueError, match="line 1"):
    cf.load_gender_pairs(str(path))


def test_raw_shared_lists():
  """The raw WinoBias swaps map 'chairwomen' to two partners: refused; the
  debiaswe equalize pairs load and are all in the default table's spirit."""
  d = data_dir_or_skip("gender_words")
  with pytest.raises(ValueError, match="chairwomen"):
    cf.load_gender_pairs(os.path.join(d, "winobias_generalized_swaps.txt"))
  pairs = cf.load_gender_pairs(os.path.join(d, "debiaswe_equalize_pairs.json"))
  assert ("he", "she") in pairs and ("king", "queen") in pairs
  s = cf.CounterfactualSwapper(pairs, names=False)
  assert s.swap("The king and his brother") == "The queen and her sister"


@pytest.fixture(scope="module")
def tokenizer():
  from trustjax.models.tokenizer import gpt2_tokenizer
  return gpt2_tokenizer()


def test_token_permutation_gpt2(tokenizer):
  perm = cf.token_permutation(tokenizer)
  v = np.arange(len(perm))
  assert perm.dtype == np.int32 and len(perm) == 50257
  np.testing.assert_array_equal(perm[perm], v)
  # GPT-2's own ids (independent of our tokenizer wrapper): he 258, she 7091,
  # " he" 339, " she" 673, "Her" 9360, " John" 1757.
  assert perm[258] == 7091 and perm[339] == 673
  assert tokenizer.decode([int(perm[9360])]) == "His"
  assert perm[tokenizer.encode(" him").ids[0]] == tokenizer.encode(" him").ids[0]
  # Every moved id decodes to a word whose partner decodes from perm[id].
  partner = {}
  for a, b in cf.load_gender_pairs() + [("his", "her")]:
    for x, y in ((a, b), (a.capitalize(), b.capitalize())):
      partner[x], partner[y] = y, x
  for a, b in cf.load_name_pairs():
    partner[a], partner[b] = b, a
  moved = np.nonzero(perm != v)[0]
  assert len(moved) > 300
  for i in moved:
    s, t = tokenizer.decode([int(i)]), tokenizer.decode([int(perm[i])])
    assert s.startswith(" ") == t.startswith(" ")
    assert partner[s.strip()] == t.strip(), (s, t)
  # Multi-token words are not in the map: "actress" is 2 tokens without a
  # leading space, " actress" is one.
  assert perm[tokenizer.encode(" actress").ids[0]] == tokenizer.encode(
      " actor").ids[0]
