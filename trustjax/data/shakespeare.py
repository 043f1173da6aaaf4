"""Tiny Shakespeare as speeches with their speaker: natural FL clients.

In `input.txt` (github.com/karpathy/char-rnn) each speech starts with a
`SPEAKER:` line and speeches are separated by blank lines. LEAF's Shakespeare
(Caldas et al. 2018, https://arxiv.org/abs/1812.01097) makes one client per
speaker per play; this file carries no play or scene markers, so segments
are derived deterministically:

  Segment heuristic: a new segment starts at speech i when none of the
  `window` speakers of speeches i-window..i-1 speaks in speeches
  i..i+window-1 (the cast changes completely, as at a scene change).

A client is a speaker within a segment, id `"SPEAKER@segment"`. Speaker
lines with no text after them (125 in the file) are dropped; a block without
a speaker line continues the previous speech. With the default `window=4`
the shared file yields 7097 speeches, 299 speaker names, 311 segments and
1194 speaker-by-segment clients.

Next-character prediction (LEAF's Shakespeare task): `CharVocab` maps
characters to ids and `char_sequences` cuts every speech into fixed-length
rows in which each character of the speech is a prediction target exactly
once (1,020,755 targets in 16,657 rows of 80 with the shared file).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Sequence

import numpy as np
import tensorflow_datasets as tfds

from trustjax.data import _tfds

URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
       "tinyshakespeare/input.txt")
FILE = "input.txt"
SUBDIR = "tinyshakespeare"
DEFAULT_WINDOW = 4
# A speaker line: a capitalised name (letters, spaces, "'", ",", "&", "-",
# ".") ending in ":", e.g. "First Citizen:", "KING RICHARD III:".
_SPEAKER = re.compile(r"[A-Z][A-Za-z0-9 ,'&.\-]{0,40}:")


def parse_speeches(text: str, window: int = DEFAULT_WINDOW
                   ) -> list[tuple[str, str, str]]:
  """[(speaker, speech_text, client_id)] in file order (see module doc)."""
  if window < 1:
    raise ValueError(f"window={window} must be >= 1")
  speeches = []   # [speaker, text]
  for block in text.split("\n\n"):
    block = block.strip("\n")
    head, _, body = block.partition("\n")
    head = head.strip()
    if _SPEAKER.fullmatch(head):
      speeches.append([head[:-1].strip(), body.strip()])
    elif speeches and block.strip():
      # A block without a `SPEAKER:` line continues the previous speech.
      speeches[-1][1] = (speeches[-1][1] + "\n" + block.strip()).strip()
  speeches = [(s, t) for s, t in speeches if t]
  speakers = [s for s, _ in speeches]
  out, segment = [], 0
  for i, (speaker, body) in enumerate(speeches):
    if i and not (set(speakers[max(0, i - window):i])
                  & set(speakers[i:i + window])):
      segment += 1
    out.append((speaker, body, f"{speaker}@{segment}"))
  return out


class TinyShakespeare(tfds.core.GeneratorBasedBuilder):
  """Speeches with speaker and client id (speaker within a segment).

  One split, `train`; features text, speaker, client_id, index (position of
  the speech in the file).
  """

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      f"Optional: place {FILE} in the manual dir, or set TRUSTJAX_DATA_DIR "
      f"to a folder holding {SUBDIR}/{FILE}; otherwise {URL} is downloaded.")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="Tiny Shakespeare speeches by speaker-by-segment client.",
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "speaker": tfds.features.Text(),
            "client_id": tfds.features.Text(),
            "index": tfds.features.Scalar(dtype=np.int32),
        }),
        homepage="https://github.com/karpathy/char-rnn")

  def _split_generators(self, dl_manager):
    path = _tfds.manual_file(dl_manager, FILE) or dl_manager.download(URL)
    with open(path, encoding="utf-8") as f:
      speeches = parse_speeches(f.read())
    return {"train": self._generate_examples(speeches)}

  def _generate_examples(self, speeches):
    for i, (speaker, text, client) in enumerate(speeches):
      yield i, {"text": text, "speaker": speaker, "client_id": client,
                "index": i}


def read_prepared(builder) -> dict:
  """A prepared (or mocked) TinyShakespeare builder as loader output."""
  cols = _tfds.read_split(builder, "train",
                          ("text", "speaker", "client_id", "index"))
  order = np.argsort(np.asarray(cols["index"], np.int64), kind="stable")
  out = {k: [_tfds.text(cols[k][i]) for i in order]
         for k in ("text", "speaker", "client_id")}
  names, index = [], {}
  for c in out["client_id"]:
    if c not in index:
      index[c] = len(names)
      names.append(c)
  out["client_index"] = np.array([index[c] for c in out["client_id"]],
                                 np.int32)
  out["client_names"] = names
  return out


def load_shakespeare(data_dir: str | None = None, *,
                     cache_dir: str | None = None,
                     download: bool = True) -> dict:
  """Tiny Shakespeare speeches in file order.

  Args:
    data_dir: `input.txt`, its folder, or a root holding
      `tinyshakespeare/input.txt`; None: `$TRUSTJAX_DATA_DIR`.
    cache_dir: TFDS cache (default $TRUSTJAX_TFDS_DIR or
      ~/.cache/trustjax/tfds).
    download: try the public URL when nothing local or cached is found.

  Returns:
    {"text": list[str] (N speeches), "speaker": list[str] (N),
     "client_id": list[str] (N, "SPEAKER@segment"),
     "client_index": int32[N] (0..C-1 in order of first appearance),
     "client_names": list[str] (C, client_names[client_index[i]] ==
     client_id[i])}.

  Raises:
    FileNotFoundError: naming the paths tried, when no file, cache or
      download is available.
  """
  path, tried = _tfds.find_local(FILE, SUBDIR, data_dir)
  builder = _tfds.make_builder(TinyShakespeare, cache_dir)
  if path is not None:
    _tfds.prepare(builder, manual_dir=os.path.dirname(path))
  elif not _tfds.is_prepared(builder):
    err = "download disabled (download=False)"
    if download:
      try:
        _tfds.download_or_raise(builder, URL)
      except Exception as e:   # pylint: disable=broad-except
        err = f"download of {URL} failed: {type(e).__name__}: {e}"
    if not _tfds.is_prepared(builder):
      where = tried or "(no data_dir; TRUSTJAX_DATA_DIR unset)"
      raise FileNotFoundError(
          f"Tiny Shakespeare not found: tried {where}, the TFDS cache "
          f"{builder.data_path}; "
          f"{err}. Set TRUSTJAX_DATA_DIR to a folder holding "
          f"{SUBDIR}/{FILE} or pass data_dir=.")
  return read_prepared(builder)


# Special ids of `CharVocab`: padding, start of a speech, unknown character.
PAD_ID, BOS_ID, UNK_ID = 0, 1, 2
_NUM_SPECIAL = 3


@dataclasses.dataclass(frozen=True)
class CharVocab:
  """Character vocabulary: ids 0 = padding, 1 = start of speech, 2 = unknown,
  `3 + i` = `chars[i]` (`chars` sorted, no repeats)."""
  chars: str

  def __post_init__(self):
    if len(set(self.chars)) != len(self.chars) or \
        list(self.chars) != sorted(self.chars):
      raise ValueError(f"CharVocab: chars={self.chars!r} must be sorted "
                       "distinct characters")

  @classmethod
  def from_texts(cls, texts: Sequence[str]) -> "CharVocab":
    """Every character that occurs in `texts`."""
    return cls("".join(sorted(set("".join(texts)))))

  def __len__(self) -> int:
    return _NUM_SPECIAL + len(self.chars)

  def encode(self, text: str) -> np.ndarray:
    """int32[len(text)] ids; characters outside the vocabulary -> UNK_ID."""
    table = {c: i + _NUM_SPECIAL for i, c in enumerate(self.chars)}
    return np.array([table.get(c, UNK_ID) for c in text], np.int32)

  def decode(self, ids: Sequence[int]) -> str:
    """Text of ids; padding and start ids are dropped, UNK shows as U+FFFD."""
    out = []
    for i in np.asarray(ids).tolist():
      if i >= _NUM_SPECIAL:
        out.append(self.chars[i - _NUM_SPECIAL])
      elif i == UNK_ID:
        out.append("\ufffd")
    return "".join(out)


def char_sequences(texts: Sequence[str], vocab: CharVocab, seq_len: int
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Fixed-length next-character rows cut from each text.

  A text of n characters c_0..c_{n-1} gives ceil(n / seq_len) rows; row j
  holds a context token followed by c_{j L} .. c_{min(n, (j+1) L) - 1}
  (L = seq_len), the context token being BOS_ID for j = 0 and c_{jL-1}
  otherwise, then padding. With the causal loss on (ids, mask) (target t+1
  scored when tokens t and t+1 are real, `models.causal_lm_token_nll`) every
  character of every text is a target exactly once. Empty texts give no row.

  Args:
    texts: N texts (e.g. the speeches of `load_shakespeare`).
    vocab: the character vocabulary.
    seq_len: L >= 1, targets per row.

  Returns:
    (ids int32[R, L+1], mask bool[R, L+1] (True = real token),
     text_of_row int64[R] (index of the text each row was cut from)),
    rows in text order.
  """
  if not isinstance(seq_len, (int, np.integer)) or seq_len < 1:
    raise ValueError(f"seq_len={seq_len!r} must be a positive int")
  rows, owner = [], []
  for t, text in enumerate(texts):
    enc = vocab.encode(text)
    for start in range(0, len(enc), seq_len):
      ctx = BOS_ID if start == 0 else int(enc[start - 1])
      rows.append(np.concatenate([[ctx], enc[start:start + seq_len]]))
      owner.append(t)
  ids = np.zeros((len(rows), seq_len + 1), np.int32)
  mask = np.zeros((len(rows), seq_len + 1), bool)
  for r, row in enumerate(rows):
    ids[r, :len(row)] = row
    mask[r, :len(row)] = True
  return ids, mask, np.asarray(owner, np.int64)
