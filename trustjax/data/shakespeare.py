"""Tiny Shakespeare as speeches with their speaker: natural FL clients.

Each speech starts with a `SPEAKER:` line; speeches are separated by blank
lines. The file carries no play markers, so a client is a speaker within a
contiguous segment of the text: a speaker's segment ends when they have not
spoken for `max_gap` speeches (default 100). This approximates LEAF's
speaker-by-play clients; on the shared file it yields 525 clients from 309
distinct speaker names and 7222 speeches.
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow_datasets as tfds

from trustjax.data import _tfds

URL = ("https://raw.githubusercontent.com/karpathy/char-rnn/master/data/"
       "tinyshakespeare/input.txt")
FILE = "input.txt"


def parse_speeches(text: str, max_gap: int = 100):
  """[(speaker, speech_text, client_id)] in file order."""
  out, last, seg = [], {}, {}
  blocks = [b for b in text.split("\n\n") if b.strip()]
  for i, block in enumerate(blocks):
    head, _, body = block.strip("\n").partition("\n")
    if not head.endswith(":"):
      continue
    speaker = head[:-1].strip()
    if speaker not in last or i - last[speaker] > max_gap:
      seg[speaker] = seg.get(speaker, -1) + 1
    last[speaker] = i
    out.append((speaker, body.strip(), f"{speaker}#{seg[speaker]}"))
  return out


class TinyShakespeare(tfds.core.GeneratorBasedBuilder):
  """Speeches with speaker and client id (speaker within a text segment)."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: set TRUSTJAX_DATA_DIR (see ../shared/data/README.md); "
      "otherwise the public file is downloaded.")

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "text": tfds.features.Text(),
            "speaker": tfds.features.Text(),
            "client_id": tfds.features.Text(),
            "index": tfds.features.Scalar(dtype=np.int32),
        }),
        homepage="https://github.com/karpathy/char-rnn")

  def _split_generators(self, dl_manager):
    local = _tfds.manual_file(dl_manager, FILE)
    path = local if local else \
        dl_manager.download(URL)
    with open(path, encoding="utf-8") as f:
      speeches = parse_speeches(f.read())
    return {"train": self._generate_examples(speeches)}

  def _generate_examples(self, speeches):
    for i, (speaker, text, client) in enumerate(speeches):
      yield i, {"text": text, "speaker": speaker, "client_id": client,
                "index": i}


def load_shakespeare(data_dir: str | None = None, *,
                     cache_dir: str | None = None) -> dict[str, list]:
  """{"text", "speaker", "client_id"} lists in file order.

  Raises FileNotFoundError naming the paths tried when no file is found and
  the download fails.
  """
  roots = [r for r in (data_dir, os.environ.get("TRUSTJAX_DATA_DIR")) if r]
  tried, manual = [], None
  for r in roots:
    for d in (r, os.path.join(r, "tinyshakespeare")):
      tried.append(os.path.join(d, FILE))
      if os.path.isfile(tried[-1]):
        manual = d
        break
    if manual:
      break
  try:
    builder = _tfds.prepare(TinyShakespeare, cache_dir=cache_dir,
                            manual_dir=manual)
  except Exception as e:
    raise FileNotFoundError(
        f"Tiny Shakespeare not found (tried {tried} and {URL}: "
        f"{type(e).__name__}); set TRUSTJAX_DATA_DIR to a folder holding "
        f"tinyshakespeare/{FILE}") from e
  ds = builder.as_data_source()["train"]
  rows = sorted((ds[i] for i in range(len(ds))), key=lambda r: r["index"])
  return {k: [_tfds.text(r[k]) for r in rows]
          for k in ("text", "speaker", "client_id")}
