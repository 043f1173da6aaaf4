"""Text-classification training job, non-private or DP-SGD.

What `launch/train.py` and `launch/train_dp.py` run: read a data set, tokenise,
build a classifier, train it with plain minibatch SGD or with DP-SGD (Poisson
sampling, per-example clipping, Gaussian noise, PLD/RDP accounting), evaluate,
and keep a workdir that resumes exactly after a kill.

Everything here is built from the library's pieces (`trustjax.data`,
`trustjax.models`, `trustjax.privacy`, `trustjax.experiment`); this module only
wires them to a config. It is importable without absl.

Privacy notes (stated guarantees, each tested in tests/experiment):
  * The noise multiplier is calibrated (or epsilon reported) for the exact
    sampling used: Poisson sampling with rate q = expected_batch_size / n and
    the number of steps run, including any truncation at `max_batch_size`.
  * Noise is added to the sum of clipped gradients and the sum is divided by
    the expected batch size (never the realised one).
  * The tokenizer is part of the guarantee. DP jobs default to the public GPT-2
    BPE vocabulary, hashed into `data.vocab_size` buckets by a data-independent
    map. `data.tokenizer=dp_words` builds a word vocabulary of the training
    split with `trustjax.privacy.dp_vocabulary` (Gaussian thresholding at
    `data.vocab_epsilon`); its Gaussian part is composed with the training
    steps in the accountant (PLD by default, not basic composition) and its
    threshold delta is added, so `dp.target_epsilon` and `dp.delta` are the
    TOTAL of vocabulary and training (`resolve_privacy`). A word vocabulary
    built from the private training set without DP (`data.tokenizer=word`) is
    refused unless `dp.allow_private_vocab=True`, and the summary then says
    that epsilon does not cover the vocabulary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
from typing import Any

import numpy as np
from ml_collections import config_dict

ConfigDict = config_dict.ConfigDict


# --------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------


def base_config() -> ConfigDict:
  """Defaults shared by configs/clinc150.py and configs/dp_clinc150.py."""
  c = ConfigDict()
  c.seed = 0
  c.data = ConfigDict(dict(
      name="clinc150",          # clinc150 | synthetic | file
      data_dir="",              # '' -> $TRUSTJAX_DATA_DIR, then download
      include_oos=True,
      allow_synthetic=True,     # loud fallback when the real data is missing
      path="",                  # data.name=file: CSV / JSONL / JSON path
      text_column="text",
      label_column="label",
      # word (built from train) | gpt2 (public BPE) | dp_words (a DP word
      # vocabulary of the training split, its cost in the job's epsilon) |
      # encoder (features of a frozen public pretrained sentence encoder,
      # `trustjax.models.sentence_embeddings`; with model.name=mlp)
      tokenizer="word",
      vocab_size=8192,
      max_len=32,
      min_count=1,
      max_examples=0,           # > 0: keep the first N rows of each split
      # tokenizer=dp_words (`trustjax.privacy.dp_vocabulary`): the
      # vocabulary's own (vocab_epsilon, vocab_delta_fraction * delta)
      # guarantee sets its noise; the job's epsilon composes it with training.
      vocab_epsilon=1.0,
      vocab_delta_fraction=0.1,  # share of the job's total delta
      vocab_max_words=16,        # k: distinct words counted per example
      vocab_seed=0,
      # tokenizer=encoder: a local HF BERT directory ('' -> the packaged
      # all-MiniLM-L6-v2, `trustjax.models.minilm_path`) and its max tokens.
      encoder_path="",
      encoder_max_len=128,
  ))
  c.model = ConfigDict(dict(
      name="bag", d_embed=128, d_hidden=256, d_model=128, num_layers=2,
      num_heads=4, d_ff=512, dropout=0.0,
      word_dropout=0.0,          # bag only: tokens left out of the mean
      hidden=()))                # mlp only: hidden widths (() = linear)
  c.optimizer = ConfigDict(dict(
      name="adam",              # adam | adamw | sgd (momentum 0.9)
      learning_rate=1e-3,       # the peak learning rate with a schedule
      # Learning-rate schedule over the run's steps (`lr_schedule`): linear
      # warm-up over warmup_steps, then constant | cosine | linear decay to
      # final_lr_fraction * learning_rate at the last step.
      schedule="constant",
      warmup_steps=0,
      final_lr_fraction=0.0,
      # > 0: evaluate (and return) an exponential moving average of the
      # parameters with this decay (`trustjax.privacy.ema_update`, warm-up
      # min(decay, (1+t)/(10+t)) when ema_warmup). With DP it is
      # post-processing of the noisy iterates: no privacy cost.
      ema_decay=0.0,
      ema_warmup=True))
  c.batch_size = 64             # DP: the EXPECTED batch size q * n
  c.num_epochs = 8.0
  c.num_steps = 0               # 0 -> num_epochs * n / batch_size
  c.log_every = 25
  c.eval_every = 0              # 0 -> only at the end
  c.checkpoint_every = 100
  c.eval_batch_size = 512
  c.dp = ConfigDict(dict(
      enabled=False,
      l2_clip=1.0,
      noise_multiplier=config_dict.placeholder(float),
      target_epsilon=config_dict.placeholder(float),
      delta=config_dict.placeholder(float),   # None -> 1 / n^1.1
      accountant="pld",
      method="auto",
      microbatch_size=0,
      max_batch_size=0,         # 0 -> sampler default (negligible truncation)
      nan_policy="raise",
      allow_private_vocab=False,
      # Adaptive clipping (Andrew et al. 2021): C tracks the target quantile
      # of per-example norms; the noisy count shares the step's sample and
      # the budget (sigma is split so the pair is one Gaussian of sigma).
      adaptive_clip=False,
      target_quantile=0.5,
      clip_lr=0.2,
      clip_count_stddev=config_dict.placeholder(float),  # None: q*n / 20
      # > 1: shard each batch over this many devices (`make_dp_grad_fn`):
      # every device clips its rows, sums are psummed, noise is added once.
      num_devices=1,
      # Per-epoch noise decay (eDP-SGD recipe): sigma_e = sigma_0 * decay^e,
      # an epoch being ceil(n / batch_size) steps; 1.0 = constant noise. The
      # accountant composes exactly this schedule; with a target epsilon,
      # sigma_0 is calibrated for it.
      noise_decay=1.0,
      # Layer-wise clipping (eDP-SGD): one threshold per parameter array, set
      # before training to a private `layer_quantile` of that layer's
      # per-example norms (noisy histogram on one Poisson batch, its cost
      # composed into the accounting; sigma calibrated for the remainder).
      per_layer=False,
      layer_quantile=0.5,
      layer_quantile_noise=config_dict.placeholder(float),  # None: q*n / 10
  ))
  return c


def apply_smoke(config: ConfigDict) -> ConfigDict:
  """Turns any classification config into a seconds-long smoke run."""
  config.data.max_len = 16
  config.data.vocab_size = 512
  config.model.d_embed = 16
  config.model.d_hidden = 32
  config.model.d_model = 16
  config.model.num_layers = 1
  config.model.num_heads = 2
  config.model.d_ff = 32
  config.batch_size = 32
  config.num_epochs = 0.0
  config.num_steps = 12
  config.log_every = 4
  config.checkpoint_every = 5
  config.eval_batch_size = 256
  config.data.max_examples = 600
  if config.dp.enabled and config.dp.noise_multiplier is None:
    config.dp.target_epsilon = config.dp.target_epsilon or 8.0
  # RDP accounts in milliseconds; PLD (the default) takes ~1-2 s per call on
  # this CPU, which dominates a seconds-long smoke run. PLD itself is tested
  # in tests/privacy.
  config.dp.accountant = "rdp"
  return config


def validate_config(config: ConfigDict) -> None:
  """Raises ValueError naming the bad field before anything runs."""
  def bad(name, value, valid):
    raise ValueError(f"config.{name}={value!r} is invalid: {valid}")
  if config.batch_size <= 0:
    bad("batch_size", config.batch_size, "must be a positive integer")
  if config.num_steps < 0:
    bad("num_steps", config.num_steps, "must be >= 0 (0: use num_epochs)")
  if config.num_steps == 0 and config.num_epochs <= 0:
    bad("num_epochs", config.num_epochs,
        "must be > 0 when num_steps is 0")
  if config.optimizer.learning_rate <= 0:
    bad("optimizer.learning_rate", config.optimizer.learning_rate,
        "must be > 0")
  oc = config.optimizer
  if oc.name not in ("adam", "sgd", "adamw"):
    bad("optimizer.name", oc.name, "valid: adam, sgd, adamw")
  if oc.schedule not in ("constant", "cosine", "linear"):
    bad("optimizer.schedule", oc.schedule, "valid: constant, cosine, linear")
  if oc.warmup_steps < 0:
    bad("optimizer.warmup_steps", oc.warmup_steps, "must be >= 0")
  if not 0.0 <= oc.final_lr_fraction <= 1.0:
    bad("optimizer.final_lr_fraction", oc.final_lr_fraction,
        "must be in [0, 1] (a fraction of the peak learning rate)")
  if not 0.0 <= oc.ema_decay < 1.0:
    bad("optimizer.ema_decay", oc.ema_decay, "must be in [0, 1) (0: no EMA)")
  word_dropout = config.model.get("word_dropout", 0.0)
  if not 0.0 <= word_dropout < 1.0:
    bad("model.word_dropout", word_dropout, "must be in [0, 1)")
  if word_dropout and config.model.name != "bag":
    bad("model.word_dropout", word_dropout,
        f"only the bag model has word dropout (model.name="
        f"{config.model.name!r})")
  if config.data.name not in ("clinc150", "synthetic", "file"):
    bad("data.name", config.data.name, "valid: clinc150, synthetic, file")
  if config.data.tokenizer not in ("word", "gpt2", "dp_words", "encoder"):
    bad("data.tokenizer", config.data.tokenizer,
        "valid: word, gpt2, dp_words, encoder")
  if (config.data.tokenizer == "encoder") != (config.model.name == "mlp"):
    bad("model.name", config.model.name,
        "data.tokenizer=encoder gives feature vectors, which only "
        "model.name=mlp takes (and mlp takes nothing else); got "
        f"data.tokenizer={config.data.tokenizer!r}")
  if config.data.tokenizer == "encoder" and config.data.encoder_max_len < 3:
    bad("data.encoder_max_len", config.data.encoder_max_len,
        "must be >= 3 ([CLS], a token, [SEP])")
  if config.data.tokenizer == "dp_words":
    if not config.data.vocab_epsilon > 0:
      bad("data.vocab_epsilon", config.data.vocab_epsilon, "must be > 0")
    if not 0 < config.data.vocab_delta_fraction < 1:
      bad("data.vocab_delta_fraction", config.data.vocab_delta_fraction,
          "must be in (0, 1): the vocabulary's share of the total delta")
    if config.data.vocab_max_words < 1:
      bad("data.vocab_max_words", config.data.vocab_max_words,
          "must be a positive integer")
  if config.data.max_len <= 0 or config.data.vocab_size <= 2:
    bad("data.max_len/vocab_size", (config.data.max_len,
                                    config.data.vocab_size),
        "max_len must be > 0 and vocab_size > 2")
  for name in ("log_every", "checkpoint_every", "eval_batch_size"):
    if config[name] <= 0:
      bad(name, config[name], "must be a positive integer")
  dp = config.dp
  if dp.enabled:
    if dp.l2_clip <= 0:
      bad("dp.l2_clip", dp.l2_clip, "the clip norm C must be > 0")
    if dp.noise_multiplier is None and dp.target_epsilon is None:
      bad("dp.noise_multiplier", None,
          "set dp.noise_multiplier or dp.target_epsilon")
    if dp.noise_multiplier is not None and dp.noise_multiplier <= 0:
      bad("dp.noise_multiplier", dp.noise_multiplier,
          "must be > 0 (sigma = 0 gives no privacy)")
    if dp.target_epsilon is not None and dp.target_epsilon <= 0:
      bad("dp.target_epsilon", dp.target_epsilon, "must be > 0")
    if not 0 < dp.noise_decay <= 1.0:
      bad("dp.noise_decay", dp.noise_decay, "must be in (0, 1]")
    if dp.per_layer and dp.adaptive_clip:
      bad("dp.per_layer", True, "per-layer and adaptive clipping are "
          "exclusive: choose one way to set the clip norms")
    if dp.noise_decay != 1.0 and dp.adaptive_clip:
      bad("dp.noise_decay", dp.noise_decay,
          "noise decay with adaptive clipping is not supported yet; use one")
    if dp.accountant not in ("pld", "rdp"):
      bad("dp.accountant", dp.accountant, "valid: pld, rdp")
    if dp.microbatch_size < 0 or dp.max_batch_size < 0:
      bad("dp.microbatch_size/max_batch_size",
          (dp.microbatch_size, dp.max_batch_size), "must be >= 0")
    if config.data.tokenizer == "word" and not dp.allow_private_vocab:
      bad("data.tokenizer", "word",
          "a word vocabulary built from the private training set leaks its "
          "rare words and is not covered by the accountant; use "
          "data.tokenizer=gpt2 (public), data.tokenizer=dp_words (a DP "
          "vocabulary whose cost is composed into epsilon), or pass "
          "--config.dp.allow_private_vocab=True to accept an epsilon that "
          "does not cover the vocabulary")


# --------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------


INPUT_KEYS = ("ids", "mask", "x")   # model inputs of a batch (not "label")


@dataclasses.dataclass
class EncodedData:
  """Model inputs per split plus what the job reports about the data.

  `arrays[split]` holds "label" int[N] and either "ids" int[N,T] / "mask"
  bool[N,T] (token models) or "x" f32[N,F] (tokenizer=encoder: sentence
  features; `vocab_size` is then the feature width F, the MLP's input).
  """
  arrays: dict[str, dict[str, np.ndarray]]
  num_classes: int
  vocab_size: int
  oos_label: int | None
  source: str
  tokenizer_note: str
  # tokenizer=dp_words: the `trustjax.privacy.DpVocabulary` release, whose
  # `gaussian_event` and `threshold_delta` every DP model of the job composes
  # into its epsilon (`resolve_privacy(..., vocab=)`).
  vocab_release: Any = None


class HashedBPE:
  """The public GPT-2 BPE vocabulary hashed into `num_buckets` ids.

  Token id t > 0 maps to 2 + (t mod (num_buckets - 2)); 0 is padding. The map
  does not depend on any data, so it costs no privacy, and it keeps the
  embedding table small enough for per-example gradients.
  """

  def __init__(self, num_buckets: int):
    from trustjax.models import BPEEncoder
    self._bpe = BPEEncoder()
    self.num_buckets = int(num_buckets)

  def __len__(self) -> int:
    return self.num_buckets

  def encode(self, texts, max_len):
    ids, mask = self._bpe.encode(list(texts), max_len)
    ids = np.asarray(ids, np.int64)
    hashed = 2 + np.mod(ids, self.num_buckets - 2)
    return np.where(mask, hashed, 0).astype(np.int32), np.asarray(mask, bool)


def load_data(config: ConfigDict, workdir: str | None = None) -> EncodedData:
  """Loads, tokenises and encodes the configured data set."""
  from trustjax import data as tjdata
  dc = config.data
  if dc.name == "clinc150":
    ds = tjdata.load_clinc150(dc.data_dir or None, include_oos=dc.include_oos,
                              allow_synthetic=dc.allow_synthetic)
  elif dc.name == "synthetic":
    ds = tjdata.synthetic_intents(seed=0)
  else:
    if not dc.path:
      raise ValueError("config.data.path is empty: data.name=file needs the "
                       "path of a CSV / JSONL / JSON file")
    ds = tjdata.load_text_classification(
        dc.path, text_column=dc.text_column, label_column=dc.label_column)
  limit = dc.max_examples
  splits = {"train": ds.train, "val": ds.val, "test": ds.test}
  if limit:
    splits = {k: _head(v, limit) for k, v in splits.items()}
  release = None
  if dc.tokenizer == "gpt2":
    tok = HashedBPE(dc.vocab_size)
    note = (f"public GPT-2 BPE hashed into {dc.vocab_size} buckets "
            "(data-independent; costs no privacy)")
  elif dc.tokenizer == "encoder":
    return _encoder_data(config, ds, splits)
  elif dc.tokenizer == "dp_words":
    tok, release = dp_word_vocab(config, splits["train"].texts)
    note = (f"DP word vocabulary of {len(release.words)} words from the "
            f"training split (Gaussian thresholding, epsilon "
            f"{release.epsilon:g}, delta {release.delta:.3g} on its own; "
            "composed into the job's epsilon)")
    if workdir:
      tok.save(os.path.join(workdir, "vocab.json"))
  else:
    tok = tjdata.WordVocab.build(splits["train"].texts,
                                 max_size=dc.vocab_size,
                                 min_count=dc.min_count)
    note = f"word vocabulary of {len(tok)} built from the training split"
    if workdir:
      tok.save(os.path.join(workdir, "vocab.json"))
  arrays = {}
  for name, split in splits.items():
    ids, mask = tok.encode(split.texts, dc.max_len)
    arrays[name] = {"ids": np.asarray(ids, np.int32),
                    "mask": np.asarray(mask, bool),
                    "label": np.asarray(split.labels, np.int32)}
  return EncodedData(arrays=arrays, num_classes=len(ds.label_names),
                     vocab_size=len(tok), oos_label=ds.oos_label,
                     source=ds.source, tokenizer_note=note,
                     vocab_release=release)


def _encoder_data(config: ConfigDict, ds, splits) -> EncodedData:
  """tokenizer=encoder: each split's texts -> frozen public sentence features.

  The encoder (and its WordPiece vocabulary) is public and fixed before
  training, and example i's feature vector is a function of text i alone, so
  the features are a data-independent per-example map: they cost no privacy
  and leave sampling, clipping and the accountant unchanged. (This assumes
  the public encoder was not trained on the private data: all-MiniLM-L6-v2's
  model card lists its training sets; CLINC150 is not among them.) Features
  are cached on disk (`feature_cache_dir`) keyed by the encoder's files, the
  max length and the texts, since encoding is the slow part on a CPU.
  """
  from trustjax import models
  dc = config.data
  path = dc.encoder_path or models.minilm_path()
  arrays, dim, encoder = {}, None, None
  root = feature_cache_dir()
  digest = _encoder_digest(path, dc.encoder_max_len) if root else None
  for name, split in splits.items():
    texts = list(split.texts)
    cache = _feature_cache_file(root, digest, texts) if root else None
    x = None
    if cache and os.path.exists(cache):
      x = np.load(cache)
      if x.ndim != 2 or len(x) != len(texts):   # a damaged file: recompute
        x = None
    if x is None:
      if encoder is None:
        encoder = models.load_sentence_encoder(path)
      x = models.sentence_embeddings(*encoder, texts,
                                     max_len=int(dc.encoder_max_len))
      if cache:
        os.makedirs(os.path.dirname(cache), exist_ok=True)
        tmp = cache + f".{os.getpid()}.tmp.npy"
        np.save(tmp, x)
        os.replace(tmp, cache)
    x = np.asarray(x, np.float32)
    dim = x.shape[1]
    arrays[name] = {"x": x, "label": np.asarray(split.labels, np.int32)}
  name = dc.encoder_path or "all-MiniLM-L6-v2 (packaged)"
  note = (f"frozen public sentence encoder {name} ({dim}-d mean-pooled, "
          "L2-normalised features; a data-independent per-example map: "
          "costs no privacy)")
  return EncodedData(arrays=arrays, num_classes=len(ds.label_names),
                     vocab_size=int(dim), oos_label=ds.oos_label,
                     source=ds.source, tokenizer_note=note)


def feature_cache_dir() -> str | None:
  """Where sentence features are cached: $TRUSTJAX_FEATURE_CACHE ('' or
  'none' disables), else ~/.cache/trustjax/features."""
  env = os.environ.get("TRUSTJAX_FEATURE_CACHE")
  if env is not None:
    return None if env.strip().lower() in ("", "none") else env
  return os.path.join(os.path.expanduser("~"), ".cache", "trustjax",
                      "features")


def _encoder_digest(path: str, max_len: int) -> bytes:
  """sha256 of the encoder's files and max length (the cache key's first
  half; ~0.2 s for MiniLM's 90 MB of weights, so computed once per job)."""
  import hashlib
  h = hashlib.sha256()
  for name in ("config.json", "model.safetensors", "tokenizer.json"):
    f = os.path.join(path, name)
    if os.path.exists(f):
      h.update(name.encode())
      with open(f, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 22), b""):
          h.update(chunk)
  h.update(f"max_len={int(max_len)}\n".encode())
  return h.digest()


def _feature_cache_file(root: str, encoder_digest: bytes, texts) -> str:
  import hashlib
  h = hashlib.sha256(encoder_digest)
  for t in texts:
    h.update(t.encode("utf-8", "surrogatepass"))
    h.update(b"\0")
  return os.path.join(root, h.hexdigest()[:32] + ".npy")


def vocab_total_delta(config: ConfigDict, num_examples: int) -> float:
  """The job's total delta: dp.delta, else 1/n^1.1 (n training examples)."""
  from trustjax.privacy import default_delta
  if config.dp.delta is not None:
    return float(config.dp.delta)
  return default_delta(num_examples)


def dp_word_vocab(config: ConfigDict, texts):
  """(WordVocab, DpVocabulary) of `texts` for tokenizer=dp_words.

  The release is `trustjax.privacy.dp_vocabulary` at epsilon
  `data.vocab_epsilon` and delta `data.vocab_delta_fraction` times the job's
  total delta (`vocab_total_delta` with n = len(texts)), at most
  `data.vocab_max_words` distinct words per example and `data.vocab_size - 2`
  words (pad and unknown take ids 0 and 1), seeded by `data.vocab_seed`.
  """
  from trustjax import data as tjdata
  from trustjax.privacy import dp_vocabulary
  dc = config.data
  texts = list(texts)
  delta = dc.vocab_delta_fraction * vocab_total_delta(config, len(texts))
  release = dp_vocabulary(texts, epsilon=float(dc.vocab_epsilon),
                          delta=delta,
                          max_words_per_example=int(dc.vocab_max_words),
                          seed=int(dc.vocab_seed),
                          tokenize=tjdata.tokenize_words,
                          max_size=int(dc.vocab_size) - 2)
  return tjdata.WordVocab(release.words), release


def _head(split, n):
  return type(split)(texts=list(split.texts[:n]), labels=split.labels[:n])


# --------------------------------------------------------------------------
# Training
# --------------------------------------------------------------------------


def lr_schedule(config: ConfigDict, learning_rate, steps: int | None):
  """The learning rate, or `count -> rate` under `config.optimizer.schedule`.

  Linear warm-up to `learning_rate` over `warmup_steps` updates, then
  constant, or a cosine or linear decay reaching `final_lr_fraction *
  learning_rate` at update `steps - 1`. `learning_rate` may be traced (a
  stacked sweep's per-model value); `steps` is the run's number of updates.
  """
  import jax.numpy as jnp
  oc = config.optimizer
  if oc.schedule == "constant" and not oc.warmup_steps:
    return learning_rate
  if steps is None:
    raise ValueError(f"config.optimizer.schedule={oc.schedule!r} / "
                     f"warmup_steps={oc.warmup_steps} need the run's number "
                     "of steps")
  warm, final = int(oc.warmup_steps), float(oc.final_lr_fraction)
  span = max(1, steps - 1 - warm)

  def rate(count):
    t = jnp.asarray(count, jnp.float32)
    factor = jnp.minimum(1.0, (t + 1.0) / warm) if warm else 1.0
    frac = jnp.clip((t - warm) / span, 0.0, 1.0)
    if oc.schedule == "cosine":
      factor = factor * (final + (1 - final) * 0.5 *
                         (1 + jnp.cos(jnp.pi * frac)))
    elif oc.schedule == "linear":
      factor = factor * (1 - (1 - final) * frac)
    return learning_rate * factor
  return rate


def num_train_steps(config: ConfigDict, num_examples: int) -> int:
  if config.num_steps:
    return int(config.num_steps)
  return max(1, int(math.ceil(config.num_epochs * num_examples
                              / config.batch_size)))


def _epoch_batch(n: int, batch_size: int, seed: int, step: int):
  """Shuffled fixed-size batches (non-private runs): indices and row mask."""
  steps_per_epoch = max(1, math.ceil(n / batch_size))
  epoch, i = divmod(step, steps_per_epoch)
  perm = np.random.default_rng([seed, epoch]).permutation(n)
  idx = perm[i * batch_size:(i + 1) * batch_size]
  mask = np.zeros(batch_size, bool)
  mask[:len(idx)] = True
  out = np.zeros(batch_size, np.int64)
  out[:len(idx)] = idx
  return out, mask


def _gather(arrays, idx, mask):
  """Fixed-shape model batch (padding rows zeroed); the row mask travels
  separately to the step, so it is dropped from the batch dict."""
  from trustjax.data import gather_batch
  batch = gather_batch(arrays, idx, mask)
  del batch["example_mask"]
  return batch


def evaluate(model_apply, params, arrays, batch_size, oos_label):
  """Accuracy, in-scope accuracy and out-of-scope recall/precision.

  `model_apply(params, inputs) -> logits` with `inputs` the model-input
  arrays of one fixed-size batch ("ids"/"mask" or "x"; see `_build`).
  """
  preds = []
  n = len(arrays["label"])
  keys = [k for k in INPUT_KEYS if k in arrays]
  for start in range(0, n, batch_size):
    idx = np.arange(start, start + batch_size) % n
    logits = model_apply(params, {k: arrays[k][idx] for k in keys})
    preds.append(np.asarray(logits).argmax(-1)[:min(batch_size, n - start)])
  pred = np.concatenate(preds) if preds else np.zeros(0, np.int64)
  y = arrays["label"]
  out = {"accuracy": float(np.mean(pred == y)) if n else float("nan")}
  if oos_label is not None:
    ins = y != oos_label
    oos = ~ins
    out["in_scope_accuracy"] = float(np.mean(pred[ins] == y[ins]))
    if oos.any():
      out["oos_recall"] = float(np.mean(pred[oos] == oos_label))
    flagged = pred == oos_label
    if flagged.any():
      out["oos_precision"] = float(np.mean(y[flagged] == oos_label))
  return out


@dataclasses.dataclass
class Privacy:
  """Resolved DP settings of a run: what the accountant and the noise share.

  `mechanism` holds C, the expected batch size and sigma_0; with noise decay
  (`decay < 1`) step t uses sigma_0 * decay^(t // steps_per_epoch), both in
  the noise transform (`noise_schedule`) and in the accounted event.
  """
  mechanism: Any
  sampler: Any
  delta: float
  steps: int
  accountant: str
  decay: float = 1.0
  steps_per_epoch: int = 1
  setup_event: Any = None   # e.g. the per-layer threshold query, run once
  # A DP vocabulary's threshold delta, paid outside the accountant: epsilon
  # is then `trustjax.privacy.composed_epsilon` (its Gaussian part is in
  # `setup_event`).
  threshold_delta: float = 0.0
  clip: Any = None          # what clipped_grad clips to (float or pytree)

  def event(self, steps: int, sigma0: float | None = None):
    """The DpEvent of the setup query (if any) and the first `steps` steps."""
    train = self._train_event(steps, sigma0)
    if self.setup_event is None:
      return train
    import dp_accounting
    return dp_accounting.ComposedDpEvent([self.setup_event, train])

  def _train_event(self, steps: int, sigma0: float | None):
    from trustjax.privacy import schedule_event
    m = self.mechanism
    if self.decay == 1.0 and sigma0 is None:
      # Sampler's event (truncation included) at the effective noise
      # multiplier of gradient sum + any adaptive-clip count.
      return m.dp_event(steps)
    if self.decay == 1.0:
      # Constant noise: one self-composed event (PLD self-composes it by one
      # FFT power; the per-epoch segments below would cost one PLD each).
      return self.sampler.dp_event(sigma0, steps)
    s0 = m.noise_multiplier if sigma0 is None else sigma0
    segments, done, e = [], 0, 0
    while done < steps:
      k = min(self.steps_per_epoch, steps - done)
      segments.append((s0 * self.decay ** e, m.sampling_rate, k))
      done, e = done + k, e + 1
    return schedule_event(segments, num_examples=self.sampler.num_examples,
                          truncated_batch_size=self.sampler.max_batch_size)

  def noise_schedule(self):
    """sigma for the noise transform: a float, or `count -> sigma_t`."""
    s0, decay, spe = (self.mechanism.noise_multiplier, self.decay,
                      self.steps_per_epoch)
    if decay == 1.0:
      return s0
    return lambda count: s0 * decay ** (count // spe)

  def epsilon(self, steps: int) -> float:
    from trustjax.privacy import composed_epsilon
    from trustjax.privacy import epsilon_from_event
    if steps == 0 and self.setup_event is None:
      return 0.0
    if self.threshold_delta:
      return float(composed_epsilon(self.event(steps), self.delta,
                                    self.threshold_delta,
                                    accountant=self.accountant))
    return float(epsilon_from_event(self.event(steps), self.delta,
                                    accountant=self.accountant))


def layer_quantile_noise(config: ConfigDict) -> float:
  """Noise std per histogram bin of the per-layer threshold query."""
  return config.dp.layer_quantile_noise or config.batch_size / 10.0


def private_layer_clips(config: ConfigDict, privacy: Privacy, params,
                        loss_fn, train: dict) -> Any:
  """eDP-SGD thresholds: a private quantile of each layer's norms.

  Runs once, before training, on the Poisson batch of step index `steps`
  (never a training step) with the initial params, so a resumed run
  recomputes the same thresholds. Its privacy cost is `privacy.setup_event`.
  Returns a pytree of floats shaped like params (one threshold per array).
  """
  import jax
  from trustjax import privacy as tjp
  dp = config.dp
  template = tjp.uniform_per_layer_clip(params, 1e6)  # norms only: no clip
  fn = jax.jit(tjp.clipped_grad(lambda p, b, r: (loss_fn(p, b, r)[0], {}),
                                template, method="vmap"))
  idx, mask = privacy.sampler.batch(privacy.steps)
  chunk = 64
  norms = []
  for start in range(0, len(idx), chunk):
    i = np.zeros(chunk, np.int64)
    m = np.zeros(chunk, bool)
    part = slice(start, min(start + chunk, len(idx)))
    i[:part.stop - start], m[:part.stop - start] = idx[part], mask[part]
    _, stats = fn(params, _gather(train, i, m), m, jax.random.key(0))
    norms.append(np.asarray(stats.per_layer_norms)[:part.stop - start])
  key = jax.random.fold_in(jax.random.key(config.seed), 2 ** 30)
  thresholds, _ = tjp.private_layer_quantiles(
      np.concatenate(norms), mask, dp.layer_quantile,
      np.geomspace(1e-4, 1e2, 61), layer_quantile_noise(config), key)
  return jax.tree.map(float, tjp.unflatten_clips(
      template, [float(t) for t in np.asarray(thresholds)]))


def _device_count() -> int:
  import jax
  return jax.device_count()


_CALIBRATED: dict = {}


def resolve_privacy(config: ConfigDict, num_examples: int,
                    steps: int, num_layers: int = 1,
                    vocab: Any = None) -> Privacy:
  """Calibrates sigma (or takes it), builds sampler + mechanism; validates.

  With `data.tokenizer=dp_words`, `vocab` must be the job's
  `trustjax.privacy.DpVocabulary` (`EncodedData.vocab_release`): its Gaussian
  event joins `setup_event` and is composed with training by the accountant
  (PLD by default), its threshold delta is paid outside it, and epsilon is
  `trustjax.privacy.composed_epsilon` (proof in `trustjax.privacy.dp_vocab`).
  `dp.delta` and `dp.target_epsilon` are then the job's TOTAL (vocabulary and
  training): sigma is calibrated for what the vocabulary leaves.
  """
  from trustjax import privacy as tjp
  dp = config.dp
  n = num_examples
  q = config.batch_size / n
  if q > 1:
    raise ValueError(
        f"config.batch_size={config.batch_size} is the expected Poisson batch "
        f"size and exceeds the {n} training examples; use at most {n}")
  delta = dp.delta if dp.delta is not None else tjp.default_delta(n)
  if delta >= 1.0 / n:
    raise ValueError(f"config.dp.delta={delta} must be < 1/n = {1.0 / n:.3g} "
                     f"for n={n} training examples")
  # The sampler's own event (truncation at max_batch_size included) is what
  # sigma is calibrated for and what epsilon is reported from.
  max_batch = dp.max_batch_size or None
  if dp.num_devices > 1:
    if dp.num_devices > _device_count():
      raise ValueError(f"config.dp.num_devices={dp.num_devices} but only "
                       f"{_device_count()} devices are visible")
    # The fixed batch shape must split evenly over the devices.
    b = max_batch or tjp.default_max_batch_size(n, q, 1e-9 / steps)
    max_batch = min(-(-b // dp.num_devices) * dp.num_devices,
                    -(-(n + 1) // dp.num_devices) * dp.num_devices)
  sampler = tjp.PoissonSampler(n, q, max_batch_size=max_batch,
                               seed=config.seed, steps=steps)
  spe = max(1, math.ceil(n / config.batch_size))
  setup = None
  if dp.per_layer:
    # One noisy [L, K] histogram on one Poisson batch of the same sampler:
    # sensitivity sqrt(L), noise multiplier std / sqrt(L).
    setup = tjp.dp_sgd_event(
        layer_quantile_noise(config) / math.sqrt(num_layers), q, 1,
        truncated_batch_size=sampler.max_batch_size, num_examples=n)
  threshold_delta = 0.0
  if config.data.tokenizer == "dp_words":
    setup, threshold_delta = _vocab_setup(config, vocab, setup, delta)
  probe = Privacy(tjp.GaussianMechanism.from_sampler(sampler, dp.l2_clip,
                                                     1.0),
                  sampler, delta, steps, dp.accountant, dp.noise_decay, spe,
                  setup_event=setup)
  if dp.noise_multiplier is not None:
    sigma = float(dp.noise_multiplier)
  elif dp.noise_decay == 1.0 and setup is None:
    # Memoised: the points of a sweep often share (epsilon, q, n, steps), and
    # one PLD calibration costs seconds. The key holds every input of the
    # calibration, so a hit returns exactly what a new search would.
    key = (float(dp.target_epsilon), float(delta), n, q, steps,
           sampler.max_batch_size, dp.accountant)
    if key not in _CALIBRATED:
      _CALIBRATED[key] = tjp.calibrate_event(
          lambda s: sampler.dp_event(s, steps), dp.target_epsilon, delta,
          accountant=dp.accountant)
    sigma = _CALIBRATED[key]
  else:
    target, acc_delta = dp.target_epsilon, delta
    if threshold_delta:
      target, acc_delta = tjp.accountant_target(target, delta,
                                                threshold_delta)
    # Memoised as above; the setup event's repr holds all its parameters.
    key = (float(target), float(acc_delta), n, q, steps,
           sampler.max_batch_size, dp.accountant, dp.noise_decay, spe,
           repr(setup))
    if key not in _CALIBRATED:
      _CALIBRATED[key] = tjp.calibrate_event(
          lambda s: probe.event(steps, sigma0=s), target, acc_delta,
          accountant=dp.accountant)
    sigma = _CALIBRATED[key]
  if dp.adaptive_clip:
    sigma_b = dp.clip_count_stddev or config.batch_size / 20.0
    mech = tjp.GaussianMechanism.from_sampler(
        sampler, dp.l2_clip, tjp.gradient_noise_multiplier(sigma, sigma_b),
        aux_noise_multipliers=(tjp.count_noise_multiplier(sigma_b),))
  else:
    mech = tjp.GaussianMechanism.from_sampler(sampler, dp.l2_clip, sigma)
  priv = Privacy(mechanism=mech, sampler=sampler, delta=delta, steps=steps,
                 accountant=dp.accountant, decay=dp.noise_decay,
                 steps_per_epoch=spe, setup_event=setup,
                 threshold_delta=threshold_delta)
  if dp.target_epsilon is not None:
    eps = priv.epsilon(steps)
    if eps > dp.target_epsilon * (1 + 1e-9):
      raise ValueError(
          f"with dp.noise_multiplier={sigma} the run would spend epsilon "
          f"{eps:.3g} > dp.target_epsilon={dp.target_epsilon}; raise sigma, "
          "lower the number of steps or the batch size")
  return priv


def _vocab_setup(config: ConfigDict, vocab, setup, delta: float):
  """(setup event with the vocabulary's Gaussian part, threshold delta)."""
  import dp_accounting
  from trustjax import privacy as tjp
  if vocab is None:
    raise ValueError(
        "config.data.tokenizer=dp_words but resolve_privacy got no vocabulary "
        "release (vocab=data.vocab_release): its cost would be missing from "
        "epsilon")
  dt = float(vocab.threshold_delta)
  if dt >= delta:
    raise ValueError(
        f"config.data.vocab_delta_fraction={config.data.vocab_delta_fraction}"
        f" leaves the vocabulary's threshold delta {dt:.3g} >= the total "
        f"delta {delta:.3g}; use a fraction well below 1")
  target = config.dp.target_epsilon
  if target is not None:
    alone = tjp.composed_epsilon(vocab.gaussian_event, delta, dt,
                                 accountant=config.dp.accountant)
    if alone >= target:
      raise ValueError(
          f"config.data.vocab_epsilon={config.data.vocab_epsilon} costs "
          f"epsilon {alone:.3g} on its own, which leaves nothing of "
          f"dp.target_epsilon={target} (the total) for training; use a "
          "smaller vocab_epsilon or a larger target")
  event = vocab.gaussian_event
  if setup is not None:
    event = dp_accounting.ComposedDpEvent([event, setup])
  return event, dt


def _build(config: ConfigDict, data: EncodedData):
  """Model, pure loss, jitted predict; params as a pytree of arrays."""
  import jax
  from flax import nnx
  from trustjax import models
  model = models.build_model(config.model, vocab_size=data.vocab_size,
                             max_len=config.data.max_len,
                             num_classes=data.num_classes,
                             rngs=nnx.Rngs(config.seed))
  graphdef, params, rest = nnx.split(model, nnx.Param, ...)
  loss_fn = models.classifier_loss_fn(graphdef, rest=rest,
                                      train=(config.model.dropout > 0 or
                                             config.model.get("word_dropout",
                                                              0.0) > 0))

  @jax.jit
  def predict(params, inputs):
    return models.classifier_logits(nnx.merge(graphdef, params, rest), inputs)

  return params, loss_fn, predict


def _dp_metrics(stats, row_mask) -> dict:
  """Step metrics of a DP step from `ClipStats` (loss kept as aux)."""
  import jax.numpy as jnp
  per_ex = stats.aux["loss"]
  n_real = jnp.maximum(stats.num_real, 1)
  return {"frac_clipped": stats.frac_clipped,
          "batch_size": stats.num_real,
          "num_nonfinite": stats.num_nonfinite,
          "mean_grad_norm": jnp.dot(stats.per_example_norms,
                                    row_mask.astype(jnp.float32)) / n_real,
          "loss": jnp.dot(per_ex, row_mask.astype(per_ex.dtype)) / n_real}


def _data_mesh(config: ConfigDict):
  """The ("data",) mesh of a DP run over `dp.num_devices` > 1 devices (the
  devices of every process on many hosts), else None."""
  import jax
  n = config.dp.num_devices
  if not config.dp.enabled or n <= 1:
    return None
  return jax.make_mesh((n,), ("data",), devices=jax.devices()[:n])


def _make_step(config: ConfigDict, loss_fn, tx, privacy: Privacy | None):
  """One jitted update: (state, batch, row_mask, key) -> (state, metrics).

  `state` holds "params" and "opt_state" (which carries the DP noise key),
  plus "l2_clip" with adaptive clipping.
  """
  import jax
  import optax

  if privacy is None:
    raise ValueError("_make_step is the DP step of adaptive / per-layer / "
                     "multi-device runs; other runs use _hp_step")
  from trustjax.privacy import clipped_grad
  from trustjax.privacy import quantile_clip_update
  dp = config.dp
  ebs = privacy.mechanism.expected_batch_size

  def loss_with_value(params, batch, rng):
    # Keep only the per-example loss as aux: logits would cost memory.
    per_ex, _ = loss_fn(params, batch, rng)
    return per_ex, {"loss": per_ex}

  mesh = _data_mesh(config)
  if mesh is not None:
    from trustjax.privacy import make_dp_grad_fn

  def grad_fn(clip):
    # Ghost clipping takes one (possibly traced, e.g. adaptive) clip norm,
    # also inside shard_map (make_dp_grad_fn), but not per-layer thresholds:
    # per-example gradients then come from vmap.
    method = dp.method
    if dp.per_layer and method != "vmap":
      method = "vmap"
    fn = clipped_grad(loss_with_value, clip, method=method,
                      microbatch_size=dp.microbatch_size or None,
                      nan_policy=dp.nan_policy)
    return fn if mesh is None else make_dp_grad_fn(fn, mesh, axis="data")

  def dp_step(state, batch, row_mask, key):
    params, opt_state = state["params"], state["opt_state"]
    clip = state["l2_clip"] if dp.adaptive_clip else privacy.clip
    k_grad, k_count = jax.random.split(key)
    grad_sum, stats = grad_fn(clip)(params, batch, row_mask, k_grad)
    extra = {"l2_clip": clip} if dp.adaptive_clip else {}
    updates, opt_state = tx.update(grad_sum, opt_state, params, **extra)
    metrics = _dp_metrics(stats, row_mask)
    new = _with_ema(config, state, {
        "params": optax.apply_updates(params, updates),
        "opt_state": opt_state})
    if dp.adaptive_clip:
      new["l2_clip"], _ = quantile_clip_update(
          clip, stats.per_example_norms, row_mask, k_count,
          target_quantile=dp.target_quantile, learning_rate=dp.clip_lr,
          clip_count_stddev=dp.clip_count_stddev or ebs / 20.0,
          expected_batch_size=ebs)
      metrics["l2_clip"] = clip
    return new, metrics
  return jax.jit(dp_step, donate_argnums=(0,))


# --------------------------------------------------------------------------
# The step with hyperparameters as arguments (single runs and stacked sweeps)
# --------------------------------------------------------------------------

# Fields that may differ between configs trained side by side in one program
# (`run_stacked`): they enter the step as traced values or host-side state.
STACKABLE_FIELDS = ("seed", "optimizer.learning_rate", "dp.l2_clip",
                    "dp.noise_multiplier", "dp.target_epsilon", "dp.delta")


def _simple_step(config: ConfigDict) -> bool:
  """True when the run uses the hyperparameter-argument step (`_hp_step`).

  Adaptive clipping, per-layer thresholds and multi-device batches keep their
  own step (`_make_step`) and cannot be stacked.
  """
  dp = config.dp
  return not (dp.enabled and (dp.adaptive_clip or dp.per_layer
                              or dp.num_devices > 1))


def _opt_from(config: ConfigDict, learning_rate, steps: int | None):
  """The configured optimizer at `lr_schedule(config, learning_rate, steps)`."""
  import optax
  name = config.optimizer.name
  lr = lr_schedule(config, learning_rate, steps)
  if name == "adam":
    return optax.adam(lr)
  if name == "adamw":
    return optax.adamw(lr)
  return optax.sgd(lr, momentum=0.9)


def _tx(config: ConfigDict, hp: dict, privacy: Privacy | None, key=0,
        steps: int | None = None):
  """The run's optax transform from hyperparameters (concrete or traced).

  The state structure does not depend on the values, so the state built from
  concrete values at init is the one the traced step updates. `steps` (the
  run's number of updates; default `privacy.steps`) feeds `lr_schedule`.
  """
  from trustjax.privacy import dpsgd
  if steps is None and privacy is not None:
    steps = privacy.steps
  if privacy is None:
    return _opt_from(config, hp["learning_rate"], steps)
  sigma0, decay, spe = (hp["noise_multiplier"], privacy.decay,
                        privacy.steps_per_epoch)
  opt = _opt_from(config, hp["learning_rate"], steps)
  schedule = sigma0 if decay == 1.0 else (
      lambda count: sigma0 * decay ** (count // spe))
  return dpsgd(opt, hp["l2_clip"], schedule, hp["expected_batch_size"], key)


def eval_params(state: dict):
  """The parameters a run evaluates and returns: the EMA when kept."""
  return state.get("ema", state["params"])


def _with_ema(config: ConfigDict, state: dict, new: dict) -> dict:
  """Adds the updated parameter EMA to the new state when one is kept.

  `trustjax.privacy.ema_update` of the new (noisy) parameters: a function of
  the DP iterates only, so post-processing (no privacy cost).
  """
  oc = config.optimizer
  if not oc.ema_decay:
    return new
  from trustjax.privacy import ema_update
  new["ema"] = ema_update(state["ema"], new["params"], state["ema_count"],
                          oc.ema_decay, oc.ema_warmup)
  new["ema_count"] = state["ema_count"] + 1
  return new


def _hparams(config: ConfigDict, privacy: Privacy | None) -> dict:
  """The per-model numbers the step takes as arguments (f32 scalars)."""
  hp = {"learning_rate": np.float32(config.optimizer.learning_rate)}
  if privacy is not None:
    m = privacy.mechanism
    hp.update(l2_clip=np.float32(m.l2_clip),
              noise_multiplier=np.float32(m.noise_multiplier),
              expected_batch_size=np.float32(m.expected_batch_size))
  return hp


def _hp_step(config: ConfigDict, loss_fn, privacy: Privacy | None,
             static_clip: float | None, steps: int | None = None):
  """Pure `(state, hp, batch, row_mask, key) -> (state, metrics)`.

  One model's update with the learning rate, clip norm, noise multiplier and
  expected batch size taken from `hp` (so `vmap` can give each model its
  own). `static_clip`, when all models share one clip norm, is baked in as a
  constant (as a separate run has it), so stacked and separate runs compile
  the same clipping code. `steps`: the run's number of updates (for a
  learning-rate schedule; default `privacy.steps`). With
  `optimizer.ema_decay`, the state also carries "ema" and "ema_count".
  """
  import jax
  import jax.numpy as jnp
  import optax

  if privacy is None:
    def step(state, hp, batch, row_mask, key):
      params, opt_state = state["params"], state["opt_state"]

      def mean_loss(p):
        per_ex, _ = loss_fn(p, batch, key)
        w = row_mask.astype(per_ex.dtype)
        return jnp.dot(per_ex, w) / jnp.maximum(w.sum(), 1.0)
      loss, grads = jax.value_and_grad(mean_loss)(params)
      updates, opt_state = _tx(config, hp, None, steps=steps).update(
          grads, opt_state, params)
      return _with_ema(config, state, {
          "params": optax.apply_updates(params, updates),
          "opt_state": opt_state}), {"loss": loss}
    return step

  from trustjax.privacy import clipped_grad
  dp = config.dp

  def loss_with_value(params, batch, rng):
    per_ex, _ = loss_fn(params, batch, rng)
    return per_ex, {"loss": per_ex}

  def step(state, hp, batch, row_mask, key):
    params, opt_state = state["params"], state["opt_state"]
    if static_clip is not None:
      hp = dict(hp, l2_clip=static_clip)
    fn = clipped_grad(loss_with_value, hp["l2_clip"], method=dp.method,
                      microbatch_size=dp.microbatch_size or None,
                      nan_policy=dp.nan_policy)
    k_grad, _ = jax.random.split(key)
    grad_sum, stats = fn(params, batch, row_mask, k_grad)
    updates, opt_state = _tx(config, hp, privacy, steps=steps).update(
        grad_sum, opt_state, params)
    metrics = _dp_metrics(stats, row_mask)
    return _with_ema(config, state, {
        "params": optax.apply_updates(params, updates),
        "opt_state": opt_state}), metrics
  return step


def _flat(config: ConfigDict) -> dict:
  out = {}

  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, (ConfigDict, dict)):
        walk(v, f"{prefix}{k}.")
      else:
        out[prefix + k] = v
  walk(config.to_dict() if isinstance(config, ConfigDict) else config, "")
  return out


def stack_key(config: ConfigDict) -> str:
  """Configs with equal keys can be trained side by side (`run_stacked`).

  The key is a hash of every field except `STACKABLE_FIELDS`, plus a marker
  for configs that use a step which cannot be stacked (adaptive or per-layer
  clipping, several devices per batch): those get a key of their own.
  """
  import hashlib
  flat = {k: v for k, v in _flat(config).items()
          if k not in STACKABLE_FIELDS}
  if not _simple_step(config):
    flat["__unstackable__"] = id(config)
  blob = json.dumps(flat, sort_keys=True, default=str)
  return hashlib.sha1(blob.encode()).hexdigest()[:12]


def check_stackable(configs: list) -> None:
  """ValueError naming the fields that stop `configs` sharing one program."""
  if not configs:
    raise ValueError("no configs to stack: the list is empty")
  for i, c in enumerate(configs):
    validate_config(c)
    if not _simple_step(c):
      dp = c.dp
      why = ("dp.adaptive_clip" if dp.adaptive_clip else "dp.per_layer"
             if dp.per_layer else "dp.num_devices")
      raise ValueError(f"config {i} sets {why}, whose step cannot be stacked "
                       "with other models; run these points as separate "
                       "processes (sweep mode=processes)")
  ref = {k: v for k, v in _flat(configs[0]).items()
         if k not in STACKABLE_FIELDS}
  for i, c in enumerate(configs[1:], 1):
    flat = {k: v for k, v in _flat(c).items() if k not in STACKABLE_FIELDS}
    diff = sorted(k for k in set(ref) | set(flat)
                  if ref.get(k, "<missing>") != flat.get(k, "<missing>"))
    if diff:
      shown = ", ".join(f"{k}: {ref.get(k)!r} vs {flat.get(k)!r}"
                        for k in diff[:6])
      raise ValueError(
          f"configs 0 and {i} differ in fields that cannot vary inside one "
          f"stacked program ({shown}); only {', '.join(STACKABLE_FIELDS)} "
          "may differ. Run them as separate groups or processes")


# --------------------------------------------------------------------------
# The job
# --------------------------------------------------------------------------


@dataclasses.dataclass
class _Model:
  """One model of a run (a single run has one, a stacked run K)."""
  config: ConfigDict
  workdir: str
  rows: np.ndarray            # indices of its training examples in `train`
  privacy: Privacy | None
  tx: Any
  state: Any
  hp: dict
  ckpt: Any = None
  writer: Any = None
  start: int = 0
  restored: bool = False

  @property
  def n(self) -> int:
    return len(self.rows)

  def batch_indices(self, step: int):
    if self.privacy is not None:
      return self.privacy.sampler.batch(step)
    return _epoch_batch(self.n, self.config.batch_size, self.config.seed,
                        step)

  def extra(self, done: int) -> dict:
    extra = {"step": done}
    if self.privacy is not None:
      extra.update(noise_multiplier=self.privacy.mechanism.noise_multiplier,
                   sampler=self.privacy.sampler.state_dict(),
                   steps_accounted=done)
    return extra


def _train_rows(train_mask, n: int) -> np.ndarray:
  if train_mask is None:
    return np.arange(n)
  m = np.asarray(train_mask)
  if m.dtype != bool or m.shape != (n,):
    raise ValueError(f"train_mask must be bool[{n}] (one flag per training "
                     f"example); got {m.dtype}{list(m.shape)}")
  if not m.any():
    raise ValueError("train_mask selects no training example")
  return np.flatnonzero(m)


def _setup_model(config, workdir, data, params, loss_fn, rows,
                 steps) -> _Model:
  """Privacy, optimizer, state, checkpoint and metric writer of one model."""
  import jax
  import jax.numpy as jnp
  from trustjax import experiment as tjx
  from trustjax.privacy import dpsgd
  n = len(rows)
  privacy = None
  if config.dp.enabled:
    privacy = resolve_privacy(config, n, steps,
                              num_layers=len(jax.tree.leaves(params)),
                              vocab=data.vocab_release)
    privacy.clip = config.dp.l2_clip
    if config.dp.per_layer:
      from trustjax.privacy import total_l2_sensitivity
      privacy.clip = private_layer_clips(
          config, privacy, params, loss_fn,
          {k: v[rows] for k, v in data.arrays["train"].items()})
      # The noise is calibrated to the total sensitivity sqrt(sum C_l^2).
      privacy.mechanism = privacy.mechanism.replace(
          l2_clip=float(total_l2_sensitivity(privacy.clip)))
  hp = _hparams(config, privacy)
  if privacy is not None and not _simple_step(config):
    m = privacy.mechanism
    # Adaptive clipping passes C_t at each update (l2_clip=None here).
    opt = _opt_from(config, config.optimizer.learning_rate, steps)
    tx = dpsgd(opt, None if config.dp.adaptive_clip else privacy.clip,
               privacy.noise_schedule(), m.expected_batch_size, config.seed)
  else:
    tx = _tx(config, {k: float(v) for k, v in hp.items()}, privacy,
             key=config.seed, steps=steps)
  state = {"params": params, "opt_state": tx.init(params)}
  if config.optimizer.ema_decay:
    # Copies: the step donates its state, and params and ema must not share
    # buffers.
    state["ema"] = jax.tree.map(jnp.copy, params)
    state["ema_count"] = jnp.zeros((), jnp.int32)
  if privacy is not None and config.dp.adaptive_clip:
    state["l2_clip"] = jnp.asarray(config.dp.l2_clip, jnp.float32)
  mesh = _data_mesh(config)
  if mesh is not None:
    # Replicated over the data mesh before the restore, so a restored state
    # has the layout of a fresh one (on many hosts: global arrays).
    from trustjax.privacy.distributed import shard_global
    state = shard_global(state, mesh)
  model = _Model(config=config, workdir=workdir, rows=rows, privacy=privacy,
                 tx=tx, state=state, hp=hp)
  model.ckpt = tjx.Checkpointer(workdir, every_steps=config.checkpoint_every)
  restored = model.ckpt.restore_latest(state)
  if restored is not None:
    model.start, model.state, extra = restored
    model.restored = True
    if privacy is not None and not math.isclose(
        extra["noise_multiplier"], privacy.mechanism.noise_multiplier):
      raise ValueError(
          f"checkpoint in {workdir} was trained with noise_multiplier "
          f"{extra['noise_multiplier']}, the config now gives "
          f"{privacy.mechanism.noise_multiplier}; use --overwrite")
    print(f"resuming from step {model.start} in {workdir}", flush=True)
  model.writer = tjx.MetricWriter(
      workdir, resume_step=model.start if model.restored else None)
  return model


class _Epsilons:
  """epsilon(done) per model, computed once per distinct accounting setup."""

  def __init__(self):
    self._cache = {}

  def __call__(self, model: _Model, done: int) -> float:
    p = model.privacy
    m = p.mechanism
    key = (m.noise_multiplier, m.sampling_rate, p.sampler.num_examples,
           p.sampler.max_batch_size, p.delta, p.accountant, p.decay,
           p.steps_per_epoch, repr(p.setup_event), p.threshold_delta, done)
    if key not in self._cache:
      self._cache[key] = p.epsilon(done)
    return self._cache[key]


def _log(model: _Model, done: int, steps: int, metrics: dict, eps: _Epsilons,
         predict, data) -> dict | None:
  """Writes model's metrics at a logging step; returns them (else None)."""
  config = model.config
  if not (done % config.log_every == 0 or done == steps):
    return None
  metrics = {k: float(v) for k, v in metrics.items()}
  if model.privacy is not None:
    if metrics.get("num_nonfinite", 0) and config.dp.nan_policy == "raise":
      raise FloatingPointError(
          f"step {done} ({model.workdir}): {int(metrics['num_nonfinite'])} "
          "per-example gradients were NaN/Inf; lower the learning rate, or "
          "set dp.nan_policy=drop (such rows then contribute zero)")
    metrics["epsilon"] = eps(model, done)
  if config.eval_every and done % config.eval_every == 0:
    val = evaluate(predict, eval_params(model.state), data.arrays["val"],
                   config.eval_batch_size, data.oos_label)
    metrics.update({f"val_{k}": v for k, v in val.items()})
  model.writer.write(done, metrics)
  return metrics


def run(config: ConfigDict, workdir: str, *, overwrite: bool = False,
        stop_after: int | None = None, train_mask=None,
        data: EncodedData | None = None) -> dict:
  """Trains, evaluates and writes the workdir; returns the final summary.

  `stop_after` ends the loop early after that many steps (with a checkpoint),
  as a kill would; tests use it to check exact resume. `train_mask` (bool[N]
  over the training split) trains on a subset: its size is the n of the
  sampling rate and of the accountant.

  `data`: an `EncodedData` the caller built (e.g. CLINC150 with canaries
  inserted, `trustjax.experiment.audit_job`) instead of `load_data(config)`.
  Its "train" split (and "val"/"test" when present) must hold ids/mask of
  width `config.data.max_len` and labels; `config.data` then only describes
  it. The workdir's config check cannot see the data: a caller that resumes
  must pass the same data (the audit job keys its own workdir on the config
  that builds it). A run that already finished returns its `summary.json`
  without training or evaluating again.
  """
  return _run_models([config], [workdir], overwrite=overwrite,
                     stop_after=stop_after,
                     train_masks=None if train_mask is None else [train_mask],
                     stacked=False, data=data)[0]


def run_stacked(configs: list, workdirs: list, *, overwrite: bool = False,
                stop_after: int | None = None, train_masks=None,
                num_devices: int | None = None,
                data: EncodedData | None = None,
                return_params: bool = False,
                chunk_size: int | None = None):
  """Trains K configs side by side in one jitted program (`vmap` over K).

  The configs may differ only in `STACKABLE_FIELDS` (seed, learning rate,
  clip norm, noise multiplier or target epsilon, delta); `check_stackable`
  says which fields stop them otherwise. Each workdir ends exactly as
  `run(configs[k], workdirs[k])` would leave it (config.json, metrics.jsonl,
  checkpoints, summary.json, plots): its parameters and metrics equal the
  separate run's to float tolerance, and its epsilon is its own accountant's.
  A stacked group interrupted after a checkpoint resumes from the points'
  own checkpoints (all points must be at the same step); a point can also be
  finished by a separate `run`. A group whose points all finished returns
  their `summary.json` (and restored parameters) without training again.

  Args:
    configs: K classification-job configs.
    workdirs: K distinct output directories.
    overwrite, stop_after, data: as in `run` (`data` is shared by the K
      models).
    train_masks: optional K bool[N] masks (model k trains on its rows): the
      shadow models of membership inference. Models with different subset
      sizes need `config.num_steps` (equal step counts); their DP batches
      are padded to one length with masked rows (no contribution).
    num_devices: shard the model axis over devices (`sweeps.model_mesh`).
    return_params: also return the K models' final parameters.
    chunk_size: run the K models' step `chunk_size` models at a time
      (`sweeps.stacked_step`: `lax.map` over vmapped chunks); same results,
      often faster per model for DP-SGD on one CPU. None: vmap all K.

  Returns:
    The K summaries (as `run` returns them, `{"stopped_at": step}` when
    stopped early), or `(summaries, params)` with `return_params`: `params`
    the K single-model parameter pytrees (as `nnx.split(model, nnx.Param,
    ...)[1]` of the configured model) at the last step trained.
  """
  if len(configs) != len(workdirs):
    raise ValueError(f"{len(configs)} configs but {len(workdirs)} workdirs")
  if len({os.path.abspath(w) for w in workdirs}) != len(workdirs):
    raise ValueError("run_stacked needs one distinct workdir per config")
  if train_masks is not None and len(train_masks) != len(configs):
    raise ValueError(f"{len(train_masks)} train_masks for {len(configs)} "
                     "configs")
  check_stackable(configs)
  return _run_models(configs, workdirs, overwrite=overwrite,
                     stop_after=stop_after, train_masks=train_masks,
                     stacked=True, num_devices=num_devices, data=data,
                     return_params=return_params, chunk_size=chunk_size)


def _run_models(configs, workdirs, *, overwrite, stop_after, train_masks,
                stacked, num_devices=None, data=None, return_params=False,
                chunk_size=None):
  import jax
  from trustjax import experiment as tjx
  from trustjax.experiment import multihost
  from trustjax.sweeps import stacked as sweeps

  for c in configs:
    validate_config(c)
  _check_processes(configs, stacked)
  for c, w in zip(configs, workdirs):
    multihost.prepare_workdir(w, c, overwrite=overwrite)
  config = configs[0]
  main = multihost.is_main_process()
  if data is None:
    data = load_data(config, workdirs[0] if main else None)
    vocab = os.path.join(workdirs[0], "vocab.json")
    if main and os.path.exists(vocab):
      # The data config is shared; every workdir keeps the vocabulary, as a
      # separate run would.
      import shutil
      for w in workdirs[1:]:
        shutil.copyfile(vocab, os.path.join(w, "vocab.json"))
  else:
    if not isinstance(data, EncodedData) or "train" not in data.arrays:
      raise ValueError(f"data must be an EncodedData with a 'train' split; "
                       f"got {type(data).__name__}")
    width = config.data.max_len
    for split, a in data.arrays.items():
      if not {"ids", "mask", "label"} <= set(a) or np.ndim(a["ids"]) != 2 or \
          np.shape(a["ids"])[1] != width:
        raise ValueError(
            f"data.arrays[{split!r}] must hold ids/mask [N, {width}] "
            f"(config.data.max_len) and label [N]; got keys {sorted(a)}, "
            f"ids shape {np.shape(a.get('ids'))}")
    # Splits the caller left out are empty (not evaluated).
    empty = {"ids": np.zeros((0, width), np.int32),
             "mask": np.zeros((0, width), bool),
             "label": np.zeros(0, np.int32)}
    data = dataclasses.replace(
        data, arrays={"val": empty, "test": empty, **data.arrays})
  train = data.arrays["train"]
  n_all = len(train["label"])
  if n_all == 0:
    raise ValueError("the training split is empty")
  models, steps_of = [], []
  for i, (c, w) in enumerate(zip(configs, workdirs)):
    rows = _train_rows(None if train_masks is None else train_masks[i],
                       n_all)
    steps = num_train_steps(c, len(rows))
    c_params, loss_fn, predict = _build(c, data)
    models.append(_setup_model(c, w, data, c_params, loss_fn, rows, steps))
    steps_of.append(steps)
  if len(set(steps_of)) != 1:
    raise ValueError(f"stacked models would train different numbers of steps "
                     f"{steps_of} (num_epochs with different training-set "
                     "sizes); set config.num_steps")
  steps = steps_of[0]
  schedules = {(m.privacy.decay, m.privacy.steps_per_epoch) for m in models
               if m.privacy is not None and m.privacy.decay != 1.0}
  if len(schedules) > 1:
    raise ValueError(
        "stacked models have noise-decay epochs of different lengths "
        f"{sorted(schedules)} (different training-set sizes); use "
        "dp.noise_decay=1 or equal train_masks sizes")
  starts = {m.start for m in models}
  if len(starts) != 1:
    raise ValueError(
        "the stacked points were checkpointed at different steps "
        f"{[m.start for m in models]}; finish them as separate runs")
  start = starts.pop()
  end = steps if stop_after is None else min(steps, start + stop_after)
  eps = _Epsilons()
  summaries = [os.path.join(m.workdir, "summary.json") for m in models]
  if start == steps and all(os.path.exists(s) for s in summaries):
    # Finished earlier: the checkpoint and summary are final; evaluating and
    # logging again would only duplicate the final metrics row.
    out = []
    for m, s in zip(models, summaries):
      m.writer.close()
      m.ckpt.close()
      with open(s) as f:
        out.append(json.load(f))
    return (out, [eval_params(m.state) for m in models]) if return_params \
        else out
  progress = tjx.Progress(
      steps, initial_step=start,
      desc=("dp-train" if config.dp.enabled else "train") +
      (f" x{len(models)}" if stacked else ""))
  t0 = time.perf_counter()

  def after_step(done, states, metrics):
    # `states`/`metrics` are stacked [K, ...] (stacked) or one model's.
    logged = None
    for k, m in enumerate(models):
      if stacked and (done % m.config.log_every == 0 or done == steps or
                      m.ckpt.should_save(done) or done == end):
        m.state = jax.tree.map(lambda x, k=k: x[k], states)
      elif not stacked:
        m.state = states
      if done % m.config.log_every == 0 or done == steps:
        # Sliced only when logged: K x #metrics device ops per step add up.
        mk = (jax.tree.map(lambda x, k=k: x[k], metrics) if stacked
              else metrics)
        row = _log(m, done, steps, jax.device_get(mk), eps, predict, data)
        logged = logged or row
      m.ckpt.maybe_save(done, m.state, m.extra(done), force=(done == end))
    if logged is not None:
      progress.update(done, **{k: logged[k] for k in ("loss", "epsilon")
                               if k in logged})

  if stacked or _simple_step(config):
    step_fn = _hp_step(config, loss_fn, models[0].privacy if
                       config.dp.enabled else None,
                       _static_clip(models), steps=steps)
  if stacked:
    # One batch length for all models: DP samplers over subsets of
    # different sizes may have different maxima; pad with masked rows.
    width = max(len(m.batch_indices(start)[0]) for m in models)

    def batch_indices(k, t):
      idx, row_mask = models[k].batch_indices(t)
      pad = width - len(idx)
      if pad:
        idx = np.concatenate([idx, np.zeros(pad, idx.dtype)])
        row_mask = np.concatenate([row_mask, np.zeros(pad, bool)])
      return idx, row_mask

    sweeps.vmap_train(
        step_fn, [m.state for m in models], [m.hp for m in models], train,
        batch_indices, end,
        seeds=[m.config.seed for m in models], start_step=start,
        on_step=after_step, num_devices=num_devices, chunk_size=chunk_size,
        data_masks=None if train_masks is None else
        np.stack([np.asarray(t, bool) for t in train_masks]))
  else:
    m = models[0]
    if _simple_step(config):
      jitted = jax.jit(step_fn, donate_argnums=(0,))
      hp = m.hp
      call = lambda st, b, rm, key: jitted(st, hp, b, rm, key)  # noqa: E731
    else:
      call = _make_step(config, loss_fn, m.tx, m.privacy)
    base_key = jax.random.key(config.seed)
    state = m.state
    for step in range(start, end):
      idx, row_mask = m.batch_indices(step)
      batch = _gather(train, np.where(row_mask, m.rows[np.where(
          row_mask, idx, 0)], 0), row_mask)
      state, metrics = call(state, batch, row_mask,
                            jax.random.fold_in(base_key, step))
      after_step(step + 1, state, metrics)
  progress.close()
  train_time = time.perf_counter() - t0
  if end < steps:
    for m in models:
      m.writer.close()
      m.ckpt.close()
    out = [{"stopped_at": end} for _ in models]
  else:
    out = [_finish(m, data, predict, steps, train_time, eps) for m in models]
  return (out, [eval_params(m.state) for m in models]) if return_params \
      else out


def _check_processes(configs, stacked: bool) -> None:
  """A multi-host job (`jax.process_count() > 1`, see
  `trustjax.experiment.multihost`) runs one DP model data-parallel over a
  mesh of every device of every process; anything else would train one
  copy per process."""
  import jax
  if jax.process_count() == 1:
    return
  config = configs[0]
  if stacked or len(configs) > 1:
    raise ValueError("stacked runs (run_stacked, sweeps) do not run on "
                     f"several processes ({jax.process_count()} here); run "
                     "them on one host")
  if not config.dp.enabled:
    raise ValueError(
        f"this job runs on {jax.process_count()} processes: only DP training "
        "shards its batches over them; set config.dp.enabled=True and "
        f"config.dp.num_devices={jax.device_count()}")
  from trustjax.experiment import multihost
  multihost.require_all_devices("dp.num_devices", config.dp.num_devices)


def _static_clip(models) -> float | None:
  """The clip norm when every model shares one concrete value (else None)."""
  clips = {float(m.hp["l2_clip"]) for m in models if "l2_clip" in m.hp}
  if len(clips) == 1:
    return clips.pop()
  return None


def _finish(m: _Model, data, predict, steps, train_time, eps) -> dict:
  """Final evaluation, summary.json and plots of one model."""
  import jax
  config, workdir, privacy = m.config, m.workdir, m.privacy
  summary = {"data": data.source, "tokenizer": data.tokenizer_note,
             "steps": steps, "train_seconds_this_run": round(train_time, 2),
             "num_train_examples": m.n,
             "num_params": int(sum(np.size(x) for x in
                                   jax.tree.leaves(m.state["params"])))}
  for split in ("train", "val", "test"):
    arrays = data.arrays[split]
    if split == "train":
      arrays = {k: v[m.rows] for k, v in arrays.items()}
    if len(arrays["label"]):
      res = evaluate(predict, eval_params(m.state), arrays,
                     config.eval_batch_size, data.oos_label)
      summary.update({f"{split}_{k}": v for k, v in res.items()})
  if data.vocab_release is not None:
    vocab = data.vocab_release
    summary.update(vocab_words=len(vocab.words), vocab_epsilon=vocab.epsilon,
                   vocab_delta=vocab.delta,
                   vocab_threshold_delta=vocab.threshold_delta)
  if privacy is not None:
    mech = privacy.mechanism
    summary.update(epsilon=eps(m, steps), delta=privacy.delta,
                   noise_multiplier=mech.effective_noise_multiplier,
                   l2_clip=mech.l2_clip,
                   sampling_rate=mech.sampling_rate,
                   expected_batch_size=mech.expected_batch_size,
                   accountant=privacy.accountant,
                   sampling="Poisson (accounted as sampled)")
    if config.dp.per_layer:
      leaves = jax.tree.leaves(privacy.clip)
      summary.update(per_layer_clips=len(leaves),
                     per_layer_clip_min=min(leaves),
                     per_layer_clip_max=max(leaves))
    if config.dp.noise_decay != 1.0:
      summary.update(noise_decay=config.dp.noise_decay,
                     final_noise_multiplier=mech.noise_multiplier *
                     config.dp.noise_decay ** ((steps - 1) //
                                               privacy.steps_per_epoch))
    if config.dp.adaptive_clip:
      summary.update(gradient_noise_multiplier=mech.noise_multiplier,
                     initial_l2_clip=mech.l2_clip,
                     final_l2_clip=float(m.state["l2_clip"]),
                     clip_target_quantile=config.dp.target_quantile)
    if config.data.tokenizer == "dp_words":
      summary["privacy_note"] = (
          "epsilon covers the DP word vocabulary and training together: "
          "the vocabulary's Gaussian counts are composed with the "
          f"training steps by the {privacy.accountant.upper()} "
          "accountant at delta minus its threshold delta, which is "
          "added to delta (trustjax.privacy.composed_epsilon)")
    if config.data.tokenizer == "encoder":
      summary["privacy_note"] = (
          "epsilon covers training on the features of a frozen public "
          "encoder (a per-example map fixed before training); it assumes "
          "the encoder's own training data did not include this data set")
    if config.data.tokenizer == "word":
      summary["privacy_note"] = (
          "epsilon does NOT cover the word vocabulary, which was built from "
          "the private training set (dp.allow_private_vocab=True)")
  else:
    summary["epsilon"] = float("inf")
  # Wall-clock time is not part of metrics.jsonl: it must be identical
  # whether or not the run was interrupted (or stacked).
  m.writer.write(steps, {f"final_{k}": v for k, v in summary.items()
                         if isinstance(v, (int, float)) and
                         k not in ("train_seconds_this_run", "epsilon")
                         or (k == "epsilon" and privacy is not None)})
  m.writer.close()
  m.ckpt.close()
  if m.writer.active:   # process 0 of a multi-host job, or a single process
    _plot_curves(workdir)
    with open(os.path.join(workdir, "summary.json"), "w") as f:
      json.dump(summary, f, indent=2)
  return summary


def _plot_curves(workdir: str) -> None:
  from trustjax import experiment as tjx
  rows = [r for r in tjx.read_metrics(workdir) if "loss" in r]
  if not rows:
    return
  xs = [r["step"] for r in rows]
  tjx.line_plot(os.path.join(workdir, "loss.png"), xs,
                {"train loss": [r["loss"] for r in rows]}, xlabel="step",
                ylabel="loss", title="training loss")
  if "epsilon" in rows[0]:
    tjx.line_plot(os.path.join(workdir, "epsilon.png"), xs,
                  {"epsilon": [r["epsilon"] for r in rows]}, xlabel="step",
                  ylabel="epsilon", title="privacy spent")


def format_summary(summary: dict) -> str:
  """Human-readable final report, one `key: value` per line."""
  lines = []
  for k, v in summary.items():
    lines.append(f"  {k}: {v:.4g}" if isinstance(v, float) else f"  {k}: {v}")
  return "\n".join(lines)
