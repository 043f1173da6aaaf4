"""K models side by side (`trustjax.sweeps.stacked`, `run_stacked`) equal K
separate runs with the same seeds, settings and data masks."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from trustjax import sweeps
from trustjax.experiment import classification
from trustjax.experiment import load_config

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


# ---------------------------------------------------------------- stack ---


def test_stack_unstack_round_trip():
  trees = [{"w": np.full((2, 3), float(i)), "b": jnp.arange(3.0) + i}
           for i in range(4)]
  s = sweeps.stack(trees)
  assert s["w"].shape == (4, 2, 3) and s["b"].shape == (4, 3)
  assert sweeps.num_models(s) == 4
  for i, t in enumerate(sweeps.unstack(s)):
    np.testing.assert_array_equal(t["w"], trees[i]["w"])
    np.testing.assert_array_equal(t["b"], trees[i]["b"])


def test_stack_rejects_different_shapes():
  with pytest.raises(ValueError, match=r"model 1 leaf \['w'\].*cannot be"):
    sweeps.stack([{"w": np.zeros(3)}, {"w": np.zeros(4)}])
  with pytest.raises(ValueError, match="at least one"):
    sweeps.stack([])


# ------------------------------------------------ vmap_train (library) ---


def _linear_step(state, hp, batch, row_mask, key):
  """Noisy-SGD logistic regression: exercises hparams, masks and keys."""
  def loss(w):
    logits = batch["x"] @ w
    per_ex = optax.sigmoid_binary_cross_entropy(logits, batch["y"])
    m = row_mask.astype(jnp.float32)
    return jnp.dot(per_ex, m) / jnp.maximum(m.sum(), 1.0)
  l, g = jax.value_and_grad(loss)(state["w"])
  noise = hp["noise"] * jax.random.normal(key, g.shape)
  return {"w": state["w"] - hp["lr"] * (g + noise)}, {"loss": l}


def test_vmap_train_equals_separate_loops_with_masks():
  rng = np.random.default_rng(0)
  n, d, k, b, steps = 40, 5, 4, 8, 6
  data = {"x": rng.normal(size=(n, d)).astype(np.float32),
          "y": (rng.random(n) > 0.5).astype(np.float32)}
  masks = rng.random((k, n)) < 0.5
  hps = [{"lr": 0.1 * (i + 1), "noise": 0.01 * i} for i in range(k)]
  seeds = [3, 1, 4, 1]
  inits = [{"w": rng.normal(size=d).astype(np.float32)} for _ in range(k)]

  def batch_indices(i, t):
    r = np.random.default_rng([i, t])
    m = r.random(b) < 0.8
    return r.integers(0, masks[i].sum(), b), m

  logged = []
  out = sweeps.vmap_train(_linear_step, inits, hps, data, batch_indices,
                          steps, seeds=seeds, data_masks=masks,
                          on_step=lambda t, s, m: logged.append(
                              np.asarray(m["loss"])))
  assert len(logged) == steps and logged[0].shape == (k,)
  step = jax.jit(_linear_step)
  for i in range(k):
    rows = np.flatnonzero(masks[i])
    st = inits[i]
    for t in range(steps):
      idx, m = batch_indices(i, t)
      g = rows[np.where(m, idx, 0)]
      batch = {name: np.where(m[:, None] if a.ndim > 1 else m, a[g], 0)
               for name, a in data.items()}
      st, met = step(st, {kk: np.float32(v) for kk, v in hps[i].items()},
                     batch, m, jax.random.fold_in(jax.random.key(seeds[i]),
                                                  t))
      np.testing.assert_allclose(met["loss"], logged[t][i], rtol=1e-5)
    np.testing.assert_allclose(out["w"][i], st["w"], rtol=1e-5, atol=1e-6)


def test_vmap_train_bad_masks():
  data = {"x": np.zeros((4, 2), np.float32), "y": np.zeros(4, np.float32)}
  init = [{"w": np.zeros(2, np.float32)}] * 2
  hp = [{"lr": 0.1, "noise": 0.0}] * 2
  bi = lambda i, t: (np.zeros(2, int), np.ones(2, bool))  # noqa: E731
  with pytest.raises(ValueError, match=r"data_masks must be bool\[2, 4\]"):
    sweeps.vmap_train(_linear_step, init, hp, data, bi, 1, seeds=[0, 1],
                      data_masks=np.ones((2, 3), bool))
  with pytest.raises(ValueError, match=r"models \[1\] have no training"):
    sweeps.vmap_train(_linear_step, init, hp, data, bi, 1, seeds=[0, 1],
                      data_masks=np.array([[1, 0, 0, 0], [0, 0, 0, 0]], bool))


def test_model_mesh_sharding_keeps_results():
  rng = np.random.default_rng(1)
  data = {"x": rng.normal(size=(16, 3)).astype(np.float32),
          "y": (rng.random(16) > 0.5).astype(np.float32)}
  inits = [{"w": np.full(3, 0.1 * i, np.float32)} for i in range(8)]
  hps = [{"lr": 0.05 * (i + 1), "noise": 0.0} for i in range(8)]
  bi = lambda i, t: (np.arange(4) + t, np.ones(4, bool))  # noqa: E731
  one = sweeps.vmap_train(_linear_step, inits, hps, data, bi, 3,
                          seeds=list(range(8)), num_devices=1)
  eight = sweeps.vmap_train(_linear_step, inits, hps, data, bi, 3,
                            seeds=list(range(8)), num_devices=8)
  assert len(eight["w"].sharding.device_set) == 8
  np.testing.assert_allclose(one["w"], eight["w"], rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="do not split evenly"):
    sweeps.model_mesh(6, 4)


# ------------------------------------------- run_stacked (the job) ---


def _config(dp: bool, **overrides):
  name = "dp_clinc150" if dp else "clinc150"
  return load_config(os.path.join(REPO, "configs", f"{name}.py"), "smoke",
                     overrides)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def _final_params(workdir):
  import orbax.checkpoint as ocp
  ckdir = os.path.join(workdir, "checkpoints")
  step = max(int(s) for s in os.listdir(ckdir) if s.isdigit())
  tree = ocp.StandardCheckpointer().restore(
      os.path.join(ckdir, str(step), "state"))
  return jax.tree.leaves(tree["params"])


def _assert_same_run(a, b):
  ra, rb = _rows(a), _rows(b)
  assert [r["step"] for r in ra] == [r["step"] for r in rb]
  for x, y in zip(ra, rb):
    assert set(x) == set(y)
    for key, v in x.items():
      np.testing.assert_allclose(y[key], v, rtol=1e-5, atol=1e-6,
                                 err_msg=f"{key} at step {x['step']}")
  pa, pb = _final_params(a), _final_params(b)
  assert len(pa) == len(pb)
  for u, v in zip(pa, pb):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dp", [False, True], ids=["nonprivate", "dp"])
def test_run_stacked_equals_separate_runs(tmp_path, dp):
  configs = [_config(dp, seed=s, **{"optimizer.learning_rate": lr})
             for s, lr in [(0, 1e-3), (1, 3e-3), (2, 1e-2)]]
  if dp:
    # One point takes sigma, two calibrate to different target epsilons,
    # and one clips differently (C traced inside the stacked program).
    configs[1].dp.target_epsilon = None
    configs[1].dp.noise_multiplier = 1.3
    configs[2].dp.target_epsilon = 2.0
    configs[2].dp.l2_clip = 0.5
  sep = [classification.run(c, str(tmp_path / f"sep{i}"))
         for i, c in enumerate(configs)]
  st = classification.run_stacked(
      configs, [str(tmp_path / f"st{i}") for i in range(len(configs))])
  for i, (a, b) in enumerate(zip(sep, st)):
    _assert_same_run(str(tmp_path / f"sep{i}"), str(tmp_path / f"st{i}"))
    # Each model's epsilon is its own accountant's, as in its separate run.
    assert a["epsilon"] == b["epsilon"]
    np.testing.assert_allclose(a["test_accuracy"], b["test_accuracy"],
                               atol=1e-9)
  if dp:
    eps = [s["epsilon"] for s in st]
    assert len(set(eps)) == 3 and eps[2] <= 2.0 + 1e-9


def test_run_stacked_with_train_masks_equals_masked_runs(tmp_path):
  configs = [_config(True, seed=s) for s in (0, 1)]
  rng = np.random.default_rng(0)
  n = 600
  masks = [rng.random(n) < 0.5 for _ in configs]
  sep = [classification.run(c, str(tmp_path / f"sep{i}"), train_mask=m)
         for i, (c, m) in enumerate(zip(configs, masks))]
  st = classification.run_stacked(
      configs, [str(tmp_path / f"st{i}") for i in range(2)],
      train_masks=masks)
  for i in range(2):
    _assert_same_run(str(tmp_path / f"sep{i}"), str(tmp_path / f"st{i}"))
    assert st[i]["num_train_examples"] == masks[i].sum()
    assert sep[i]["epsilon"] == st[i]["epsilon"]


def test_stacked_group_resumes_exactly(tmp_path):
  configs = [_config(True, seed=s) for s in (0, 1)]
  full = [str(tmp_path / f"full{i}") for i in range(2)]
  part = [str(tmp_path / f"part{i}") for i in range(2)]
  classification.run_stacked(configs, full)
  assert classification.run_stacked(configs, part, stop_after=7) == [
      {"stopped_at": 7}] * 2
  classification.run_stacked(configs, part)
  for a, b in zip(full, part):
    with open(os.path.join(a, "metrics.jsonl")) as f1, \
        open(os.path.join(b, "metrics.jsonl")) as f2:
      assert f1.read() == f2.read()


def test_check_stackable_names_the_fields():
  a, b = _config(True), _config(True)
  b.model.name = "transformer"
  with pytest.raises(ValueError, match="model.name"):
    classification.check_stackable([a, b])
  c = _config(True)
  c.dp.adaptive_clip = True
  with pytest.raises(ValueError, match="dp.adaptive_clip.*separate"):
    classification.check_stackable([a, c])
  with pytest.raises(ValueError, match="empty"):
    classification.check_stackable([])
  d = _config(True, seed=5, **{"optimizer.learning_rate": 0.5})
  classification.check_stackable([a, d])
  assert classification.stack_key(a) == classification.stack_key(d)
  assert classification.stack_key(a) != classification.stack_key(b)
