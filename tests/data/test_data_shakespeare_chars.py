"""Character vocabulary and next-character rows (no data needed)."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from trustjax.data import char_sequences
from trustjax.data import CharVocab
from trustjax.data.shakespeare import BOS_ID
from trustjax.data.shakespeare import PAD_ID
from trustjax.data.shakespeare import UNK_ID


def test_vocab_ids_by_hand():
  v = CharVocab.from_texts(["ba", "c a"])
  assert v.chars == " abc" and len(v) == 7
  np.testing.assert_array_equal(v.encode("cab z"), [6, 4, 5, 3, UNK_ID])
  assert v.decode([BOS_ID, 6, 4, PAD_ID, UNK_ID]) == "ca\ufffd"
  with pytest.raises(ValueError, match="sorted"):
    CharVocab("ba")


def test_rows_by_hand():
  v = CharVocab.from_texts(["abcde"])   # a=3 .. e=7
  ids, mask, owner = char_sequences(["abcde", "", "ab"], v, seq_len=2)
  np.testing.assert_array_equal(ids, [[BOS_ID, 3, 4], [4, 5, 6], [6, 7, 0],
                                      [BOS_ID, 3, 4]])
  np.testing.assert_array_equal(mask[2], [True, True, False])
  np.testing.assert_array_equal(owner, [0, 0, 0, 2])
  with pytest.raises(ValueError, match="seq_len"):
    char_sequences(["ab"], v, seq_len=0)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet="ab c\n", max_size=30), max_size=5),
       st.integers(1, 7))
def test_every_character_is_a_target_exactly_once(texts, seq_len):
  """Targets (token t+1 where tokens t and t+1 are real) of a text's rows,
  in order, spell the text; each target's context is the previous
  character (or BOS at the start of the text)."""
  v = CharVocab.from_texts(texts)
  ids, mask, owner = char_sequences(texts, v, seq_len)
  assert ids.shape == mask.shape == (len(owner), seq_len + 1)
  assert np.all(ids[~mask] == PAD_ID)
  for i, text in enumerate(texts):
    rows = np.flatnonzero(owner == i)
    assert len(rows) == -(-len(text) // seq_len)
    targets, contexts = [], []
    for r in rows:
      scored = mask[r, 1:] & mask[r, :-1]
      targets += ids[r, 1:][scored].tolist()
      contexts += ids[r, :-1][scored].tolist()
    assert v.decode(targets) == text
    assert contexts == ([BOS_ID] + targets[:-1] if text else [])
