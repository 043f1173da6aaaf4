"""The audit job trains through the classification job and resumes exactly.

* `run_stacked(data=, train_masks=)` with DP models on subsets of different
  sizes (so their Poisson batches have different maxima and are padded to
  one length) equals separate `run(data=, train_mask=)` calls, also with the
  models' step chunked (`chunk_size`, `lax.map` over models);
* an audit interrupted inside a defence and resumed gives the same report
  as an uninterrupted one (every number, to 1e-6; timings aside) and the
  same per-model metrics.jsonl, byte for byte;
* the audit pillar does not import `trustjax.experiment` or `launch`.
"""

import ast
import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import data_dir_or_skip
from trustjax import sweeps
from trustjax.experiment import audit_job
from trustjax.experiment import classification
from trustjax.experiment import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _lines(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_stacked_with_data_and_uneven_masks_equals_separate_runs(tmp_path):
  data_dir_or_skip("clinc150", "data_full.json")
  cfg = load_config(os.path.join(REPO, "configs", "dp_clinc150.py"), "smoke",
                    {"num_steps": 4, "checkpoint_every": 100,
                     # B = n_k + 1: no truncation term in the accounting.
                     "dp.max_batch_size": 10 ** 6})
  data = classification.load_data(cfg)
  # Drop val (the caller may leave splits out; they are then not evaluated).
  data.arrays = {k: v for k, v in data.arrays.items() if k != "val"}
  n = len(data.arrays["train"]["label"])
  rng = np.random.default_rng(3)
  masks = [rng.random(n) < 0.2, rng.random(n) < 0.7]
  configs = [cfg.copy_and_resolve_references() for _ in masks]
  configs[1].seed = 1
  sep = [classification.run(c, str(tmp_path / f"sep{i}"), train_mask=m,
                            data=data)
         for i, (c, m) in enumerate(zip(configs, masks))]
  st, params = classification.run_stacked(
      configs, [str(tmp_path / f"st{i}") for i in range(2)],
      train_masks=masks, data=data, return_params=True)
  classification.run_stacked(
      configs, [str(tmp_path / f"ch{i}") for i in range(2)],
      train_masks=masks, data=data, chunk_size=1)
  for i in range(2):
    a = _lines(tmp_path / f"sep{i}")
    for other in (f"st{i}", f"ch{i}"):
      b = _lines(tmp_path / other)
      assert [r["step"] for r in a] == [r["step"] for r in b]
      for x, y in zip(a, b):
        for key, v in x.items():
          np.testing.assert_allclose(y[key], v, rtol=1e-5, atol=1e-6,
                                     err_msg=f"{other}: {key} at step "
                                     f"{x['step']}")
    assert st[i]["num_train_examples"] == masks[i].sum()
    assert sep[i]["epsilon"] == st[i]["epsilon"]
    assert "val_accuracy" not in st[i] and "test_accuracy" in st[i]
  assert len(params) == 2
  # Batches of n_k + 1 rows: the two models' lengths differ (padded).
  assert st[0]["num_train_examples"] < st[1]["num_train_examples"] / 2
  # A finished group returns its summaries without training again.
  again = classification.run_stacked(
      configs, [str(tmp_path / f"st{i}") for i in range(2)],
      train_masks=masks, data=data)
  assert again == json.loads(json.dumps(st))
  assert len(_lines(tmp_path / "st0")) == len(_lines(tmp_path / "sep0"))


def test_chunked_models_equal_vmapped_models():
  """`chunk_size` (with a remainder chunk) changes where models run, not
  what they compute; each model also equals its own jitted loop."""
  rng = np.random.default_rng(0)
  n, d, k, b, steps = 30, 4, 5, 6, 3
  data = {"x": rng.normal(size=(n, d)).astype(np.float32)}
  inits = [{"w": rng.normal(size=d).astype(np.float32)} for _ in range(k)]
  hps = [{"lr": 0.1 * (i + 1)} for i in range(k)]

  def step(state, hp, batch, row_mask, key):
    def loss(w):
      per_ex = jnp.tanh(batch["x"] @ w) ** 2
      return jnp.dot(per_ex, row_mask.astype(jnp.float32))
    g = jax.grad(loss)(state["w"]) + 0.01 * jax.random.normal(key, (d,))
    return {"w": state["w"] - hp["lr"] * g}, {}

  def batch_indices(i, t):
    r = np.random.default_rng([i, t])
    return r.integers(0, n, b), r.random(b) < 0.7

  outs = [sweeps.vmap_train(step, inits, hps, data, batch_indices, steps,
                            seeds=list(range(k)), chunk_size=c)["w"]
          for c in (None, 1, 2)]
  for i in range(k):
    st = inits[i]
    for t in range(steps):
      idx, m = batch_indices(i, t)
      st, _ = jax.jit(step)(st, {"lr": np.float32(hps[i]["lr"])},
                            {"x": np.where(m[:, None], data["x"][idx], 0)},
                            m, jax.random.fold_in(jax.random.key(i), t))
    for out in outs:
      np.testing.assert_allclose(out[i], st["w"], rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="chunk_size=0"):
    sweeps.stacked_step(step, chunk_size=0)


def test_data_argument_is_checked(tmp_path):
  cfg = load_config(os.path.join(REPO, "configs", "dp_clinc150.py"), "smoke")
  bad = classification.EncodedData(
      arrays={"train": {"ids": np.zeros((4, 3), np.int32),
                        "mask": np.ones((4, 3), bool),
                        "label": np.zeros(4, np.int32)}},
      num_classes=2, vocab_size=16, oos_label=None, source="t",
      tokenizer_note="t")
  with pytest.raises(ValueError, match=r"max_len"):
    classification.run(cfg, str(tmp_path / "w"), data=bad)
  with pytest.raises(ValueError, match="EncodedData"):
    classification.run(cfg, str(tmp_path / "w"), data={"train": {}})


def _tiny(**overrides):
  base = {"model.name": "bag", "model.d_embed": 16, "model.d_hidden": 16,
          "epsilons": (4.0,), "num_epochs": 1.0, "batch_size": 16,
          "log_every": 8, "audit.inversion_models": 0,
          # B = n_k + 1 for each model: batches of different lengths
          # (padded), and the RDP accounting needs no truncation term.
          "dp.max_batch_size": 10 ** 6,
          "checkpoint_every": 100}
  base.update(overrides)
  return load_config(os.path.join(REPO, "configs", "audit_clinc150.py"),
                     "smoke", base)


def _numbers(x, path=""):
  """Flattened report without wall-clock times."""
  if isinstance(x, dict):
    out = {}
    for k, v in x.items():
      if k not in ("seconds", "train_seconds"):
        out.update(_numbers(v, f"{path}.{k}"))
    return out
  if isinstance(x, list):
    out = {}
    for i, v in enumerate(x):
      out.update(_numbers(v, f"{path}[{i}]"))
    return out
  return {path: x}


def test_interrupted_audit_resumes_exactly(tmp_path):
  data_dir_or_skip("clinc150", "data_full.json")
  quiet = lambda m: None  # noqa: E731
  full = audit_job.run(_tiny(), str(tmp_path / "full"), log=quiet)
  part = str(tmp_path / "part")
  stopped = audit_job.run(_tiny(), part, stop_after=3, log=quiet)
  assert stopped == {"stopped_at": {"defence": "dp_eps4", "steps": 3}}
  models = os.path.join(part, "dp_eps4", "models")
  assert sorted(os.listdir(models)) == [str(k) for k in range(6)]
  assert os.listdir(os.path.join(models, "0", "checkpoints")) == ["3"]
  assert not os.path.exists(os.path.join(part, "dp_eps4", "result.json"))
  resumed = audit_job.run(_tiny(), part, log=quiet)
  sec = full["defences"][0]
  # Each model trained on its own subset, with its own accountant.
  masks = np.load(os.path.join(part, "dp_eps4", "scores.npz"))["masks"]
  assert sec["train_info"]["steps"] == -(-masks.sum(1).max() // 16) > 3
  assert sec["train_info"]["train_sizes"] == masks.sum(1).tolist()
  assert len(set(sec["train_info"]["noise_multipliers"])) > 1
  a, b = _numbers(full), _numbers(resumed)
  assert a.keys() == b.keys()
  for key, v in a.items():
    if isinstance(v, float):
      np.testing.assert_allclose(b[key], v, rtol=1e-6, atol=1e-9,
                                 err_msg=key)
    else:
      assert b[key] == v, key
  for k in range(6):
    sub = os.path.join("dp_eps4", "models", str(k))
    with open(tmp_path / "full" / sub / "metrics.jsonl") as f1, \
        open(os.path.join(part, sub, "metrics.jsonl")) as f2:
      assert f1.read() == f2.read()


def test_audit_pillar_does_not_import_experiment_or_launch():
  """DESIGN: audit builds on privacy/models/sweeps; experiment sits on top."""
  root = os.path.join(REPO, "trustjax", "audit")
  offenders = []
  for name in sorted(os.listdir(root)):
    if not name.endswith(".py"):
      continue
    with open(os.path.join(root, name)) as f:
      tree = ast.parse(f.read())
    for node in ast.walk(tree):
      mods = []
      if isinstance(node, ast.Import):
        mods = [a.name for a in node.names]
      elif isinstance(node, ast.ImportFrom) and node.module:
        mods = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
      for m in mods:
        if m.startswith(("trustjax.experiment", "launch", "configs")):
          offenders.append(f"{name}: {m}")
  assert not offenders, offenders
