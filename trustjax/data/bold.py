"""BOLD (Dhamala et al., FAccT 2021): prompts and Wikipedia sentences.

Files `{domain}_prompt.json` / `{domain}_wiki.json` with shape
`{group: {name: [text, ...]}}`; domains `gender` (groups American_actors,
American_actresses) and `profession` (18 groups).
"""

from __future__ import annotations

import json
import os

import tensorflow_datasets as tfds

from trustjax.data import _tfds

DOMAINS = ("gender", "profession")
KINDS = ("prompt", "wiki")
URL = ("https://raw.githubusercontent.com/amazon-science/bold/main/"
       "{folder}/{domain}_{kind}.json")


class Bold(tfds.core.GeneratorBasedBuilder):
  """One config per (domain, kind): rows of domain, group, name, text."""

  VERSION = tfds.core.Version("1.0.0")
  MANUAL_DOWNLOAD_INSTRUCTIONS = (
      "Optional: set TRUSTJAX_DATA_DIR (see ../shared/data/README.md); "
      "otherwise the public file is downloaded.")
  BUILDER_CONFIGS = [
      tfds.core.BuilderConfig(name=f"{d}_{k}") for d in DOMAINS
      for k in KINDS]

  def _info(self):
    return tfds.core.DatasetInfo(
        builder=self,
        features=tfds.features.FeaturesDict({
            "domain": tfds.features.Text(),
            "group": tfds.features.Text(),
            "name": tfds.features.Text(),
            "text": tfds.features.Text(),
        }),
        homepage="https://github.com/amazon-science/bold")

  def _split_generators(self, dl_manager):
    domain, kind = self.builder_config.name.split("_")
    fname = f"{domain}_{kind}.json"
    local = _tfds.manual_file(dl_manager, fname)
    if local:
      path = local
    else:
      folder = "prompts" if kind == "prompt" else "wikipedia"
      path = dl_manager.download(URL.format(folder=folder, domain=domain,
                                            kind=kind))
    with open(path, encoding="utf-8") as f:
      raw = json.load(f)
    return {"train": self._generate_examples(raw, domain)}

  def _generate_examples(self, raw, domain):
    k = 0
    for group in sorted(raw):
      for name in sorted(raw[group]):
        for text in raw[group][name]:
          yield k, {"domain": domain, "group": group, "name": name,
                    "text": text}
          k += 1


def load_bold(domain: str = "gender", kind: str = "prompt",
              data_dir: str | None = None, *,
              cache_dir: str | None = None) -> dict[str, list[str]]:
  """{"group", "name", "text"} lists, ordered by group, name, file order."""
  if domain not in DOMAINS or kind not in KINDS:
    raise ValueError(f"domain={domain!r}, kind={kind!r}; valid domains "
                     f"{DOMAINS}, kinds {KINDS}")
  roots = [r for r in (data_dir, os.environ.get("TRUSTJAX_DATA_DIR")) if r]
  fname = f"{domain}_{kind}.json"
  tried, manual = [], None
  for r in roots:
    for d in (r, os.path.join(r, "bold")):
      tried.append(os.path.join(d, fname))
      if os.path.isfile(tried[-1]):
        manual = d
        break
    if manual:
      break
  try:
    builder = _tfds.prepare(Bold, cache_dir=cache_dir, manual_dir=manual,
                            config=f"{domain}_{kind}")
  except Exception as e:
    raise FileNotFoundError(
        f"BOLD {fname} not found (tried {tried} and the download: "
        f"{type(e).__name__}); set TRUSTJAX_DATA_DIR to a folder holding "
        f"bold/{fname}") from e
  ds = builder.as_data_source()["train"]
  rows = [ds[i] for i in range(len(ds))]
  rows.sort(key=lambda r: (_tfds.text(r["group"]), _tfds.text(r["name"])))
  return {k: [_tfds.text(r[k]) for r in rows] for k in ("group", "name",
                                                        "text")}
