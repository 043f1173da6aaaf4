"""BOLD (Dhamala et al., FAccT 2021): prompts and Wikipedia sentences.

"BOLD: Dataset and Metrics for Measuring Biases in Open-Ended Language
Generation", https://arxiv.org/abs/2101.11718. Files
`{domain}_prompt.json` (github.com/amazon-science/bold, `prompts/`) and
`{domain}_wiki.json` (`wikipedia/`), shape `{group: {name: [text, ...]}}`.
Domains here: `gender` (groups American_actors, American_actresses) and
`profession` (18 groups). One TFDS config per (domain, kind), e.g.
`bold/gender_prompt`; one split, `train`.
"""

from __future__ import annotations

import json
import os

import numpy as np
import tensorflow_datasets as tfds

from trustjax.data import _tfds

DOMAINS = ("gender", "profession")
KINDS = ("prompt", "wiki")
SUBDIR = "bold"
URL = ("https://raw.githubusercontent.com/amazon-science/bold/main/"
       "{folder}/{domain}_{kind}.json")


def _url(domain: str, kind: str) -> str:
  folder = "prompts" if kind == "prompt" else "wikipedia"
  return URL.format(folder=folder, domain=domain, kind=kind)


class Bold(tfds.core.GeneratorBasedBuilder):
  """One config per (domain, kind): rows of domain, group, name, text."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: place {domain}_{kind}.json in the manual dir, or set "
      "TRUSTJAX_DATA_DIR to a folder holding bold/; otherwise the public "
      "file is downloaded.")
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=f"{d}_{k}",
                              description=f"BOLD {d} {k}s")
      for d in DOMAINS for k in KINDS]

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        description="BOLD prompts / Wikipedia sentences by group and name.",
        features=tfds.features.FeaturesDict({
            "domain": tfds.features.Text(),
            "group": tfds.features.Text(),
            "name": tfds.features.Text(),
            "text": tfds.features.Text(),
            "index": tfds.features.Scalar(dtype=np.int32),
        }),
        homepage="https://github.com/amazon-science/bold")

  def _split_generators(self, dl_manager):
    domain, kind = self.builder_config.name.split("_")
    fname = f"{domain}_{kind}.json"
    path = (_tfds.manual_file(dl_manager, fname)
            or dl_manager.download(_url(domain, kind)))
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
    return {"train": self._generate_examples(raw, domain)}

  def _generate_examples(self, raw, domain):
    k = 0
    for group in sorted(raw):
      for name in sorted(raw[group]):
        for text in raw[group][name]:
          yield k, {"domain": domain, "group": group, "name": name,
                    "text": text, "index": k}
          k += 1


def read_prepared(builder) -> dict[str, list[str]]:
  """A prepared (or mocked) Bold builder as loader output."""
  keys = ("domain", "group", "name", "text")
  cols = _tfds.read_split(builder, "train", keys + ("index",))
  order = np.argsort(np.asarray(cols["index"], np.int64), kind="stable")
  return {k: [_tfds.text(cols[k][i]) for i in order] for k in keys}


def load_bold(domain: str = "gender", kind: str = "prompt",
              data_dir: str | None = None, *, cache_dir: str | None = None,
              download: bool = True) -> dict[str, list[str]]:
  """BOLD rows ordered by group, then name, then file order.

  Args:
    domain: "gender" or "profession".
    kind: "prompt" (generation prompts) or "wiki" (Wikipedia sentences).
    data_dir: a folder holding `{domain}_{kind}.json`, or a root holding
      `bold/`; None: `$TRUSTJAX_DATA_DIR/bold/`.
    cache_dir: TFDS cache (default $TRUSTJAX_TFDS_DIR or
      ~/.cache/trustjax/tfds).
    download: try the public URL when nothing local or cached is found.

  Returns:
    {"domain", "group", "name", "text"}: lists of N strings.
  """
  if domain not in DOMAINS:
    raise ValueError(f"domain={domain!r}; valid: {DOMAINS}")
  if kind not in KINDS:
    raise ValueError(f"kind={kind!r}; valid: {KINDS}")
  fname = f"{domain}_{kind}.json"
  path, tried = _tfds.find_local(fname, SUBDIR, data_dir)
  builder = _tfds.make_builder(Bold, cache_dir, config=f"{domain}_{kind}")
  if path is not None:
    _tfds.prepare(builder, manual_dir=os.path.dirname(path))
  elif not _tfds.is_prepared(builder):
    err = "download disabled (download=False)"
    if download:
      try:
        _tfds.download_or_raise(builder, _url(domain, kind))
      except Exception as e:   # pylint: disable=broad-except
        err = f"download failed: {type(e).__name__}: {e}"
    if not _tfds.is_prepared(builder):
      where = tried or "(no data_dir; TRUSTJAX_DATA_DIR unset)"
      raise FileNotFoundError(
          f"BOLD {fname} not found: tried {where}, the TFDS cache "
          f"{builder.data_path}; "
          f"{err}. Set TRUSTJAX_DATA_DIR to a folder holding "
          f"{SUBDIR}/{fname} or pass data_dir=.")
  return read_prepared(builder)
