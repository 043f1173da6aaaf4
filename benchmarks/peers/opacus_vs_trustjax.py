"""Opacus vs trustjax: DP-SGD step time on dp_overhead.py's workloads.

Claim measured (issue #4 "Fast DP"): a trustjax DP-SGD step is faster than
Opacus's best mode on every workload, both as the DP / non-private ratio and
in absolute ms per DP step, in the same process on the same machine.

  python benchmarks/peers/opacus_vs_trustjax.py --workloads=a,b,c --rounds=5

Workloads and JAX models come from `benchmarks/dp_overhead.py` (imported, not
copied): (a) MLP 784-512-512-10, B=256; (b) transformer classifier (V=8192,
d=128, 2 layers, 4 heads, MLP 512, T=64, B=64, masked mean pooling); (c)
GPT-2-shaped causal LM (6 layers, d=384, 6 heads, MLP 1536, T=128, B=16,
untied head, V=--lm_vocab). The PyTorch models below re-implement them layer
for layer (same names, sizes, pre-LN blocks, fused qkv Linear, explicit
softmax attention with -1e9 masking, tanh-GELU as `jax.nn.gelu`, LayerNorm
eps 1e-6 as flax, learned position Embedding) and are loaded with the SAME
initial weights as the JAX model; the forward losses are compared
(`init_loss_max_abs_diff` in the output) so an architecture mismatch shows.
Differences: the torch position embedding is looked up with ids expanded to
[B, T] (Opacus needs batch-first module inputs; same values and gradient).

Arms (all SGD, lr --lr, clip C=1, noise multiplier sigma=1, fixed batch, no
Poisson sampling, i.e. the per-step compute only):
  torch_nonprivate   forward, mean loss, backward, torch.optim.SGD step.
  opacus_hooks       PrivacyEngine.make_private(grad_sample_mode="hooks",
                     poisson_sampling=False): per-sample grads from hooks,
                     flat clipping, Gaussian noise, SGD.
  opacus_ghost       make_private(grad_sample_mode="ghost", criterion=CE):
                     ghost clipping (two backward passes), noise, SGD.
  opacus_functorch   (optional, --opacus_modes) per-sample grads via
                     torch.func vmap.
  jax_nonprivate     dp_overhead.make_step("nonprivate") with optax.sgd, on
                     the token-folded model (dense layers on [B*T, d],
                     `dp_overhead.workload(..., fold=True)`: same function,
                     the fastest JAX formulation on XLA:CPU).
  jax_nonprivate_unfolded  (optional, --arms) the same on the [B, T, d]
                     formulation (all other JAX arms fold, as
                     `trustjax.models.dense` does; ghost follows the rows).
  jax_dp_{auto,ghost,vmap}  trustjax.privacy.clipped_grad(loss_fn, C,
                     method=...) then trustjax.privacy.dpsgd(optax.sgd) (fresh
                     Gaussian noise every step), one jitted step.

Timing: per arm, --warmup untimed steps (after JAX compilation); then
--rounds rounds, each running every arm --per_round times, arms in a
shuffled order per round so machine noise (the machine may be shared) hits
all arms alike. Reported: median ms per step. One JSON line per workload.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
import warnings

# torch's OpenMP threads spin-wait by default; on a CPU shared with other
# processes a 2-thread torch step is then 10-25x slower (preempted spinners).
# PASSIVE (threads sleep at barriers) fixes that; set before torch loads.
# Export OMP_WAIT_POLICY=ACTIVE to measure the default.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
from flax import nnx
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dp_overhead  # noqa: E402  pylint: disable=wrong-import-position

from trustjax.privacy import clipped_grad  # noqa: E402
from trustjax.privacy import dpsgd  # noqa: E402

L2_CLIP, SIGMA = dp_overhead.L2_CLIP, dp_overhead.SIGMA
LN_EPS = 1e-6  # flax nnx.LayerNorm default epsilon


# ------------------------------------------------------------ torch models
class TorchMLP(nn.Module):
  """dp_overhead.MLP: 784-512-512-10, ReLU."""

  def __init__(self):
    super().__init__()
    self.l1 = nn.Linear(784, 512)
    self.l2 = nn.Linear(512, 512)
    self.l3 = nn.Linear(512, 10)

  def forward(self, x):
    return self.l3(torch.relu(self.l2(torch.relu(self.l1(x)))))


class TorchBlock(nn.Module):
  """dp_overhead.Block: pre-LN, fused qkv, explicit softmax attention."""

  def __init__(self, d, heads, d_ff):
    super().__init__()
    self.heads = heads
    self.ln1 = nn.LayerNorm(d, eps=LN_EPS)
    self.qkv = nn.Linear(d, 3 * d)
    self.o = nn.Linear(d, d)
    self.ln2 = nn.LayerNorm(d, eps=LN_EPS)
    self.ff1 = nn.Linear(d, d_ff)
    self.ff2 = nn.Linear(d_ff, d)
    self.act = nn.GELU(approximate="tanh")  # jax.nn.gelu default

  def forward(self, x, allowed):
    b, t, d = x.shape
    hd = d // self.heads
    q, k, v = self.qkv(self.ln1(x)).split(d, dim=-1)
    q, k, v = (y.view(b, t, self.heads, hd).transpose(1, 2) for y in (q, k, v))
    s = (q @ k.transpose(-1, -2)) / np.sqrt(hd)          # [B, H, Tq, Tk]
    s = s.masked_fill(~allowed, -1e9)
    a = (torch.softmax(s, dim=-1) @ v).transpose(1, 2).reshape(b, t, d)
    x = x + self.o(a)
    return x + self.ff2(self.act(self.ff1(self.ln2(x))))


class TorchTransformer(nn.Module):
  """dp_overhead.Transformer: classifier (mean pool) or causal LM."""

  def __init__(self, vocab, d, layers, heads, d_ff, t, out, causal):
    super().__init__()
    self.embed = nn.Embedding(vocab, d)
    self.pos = nn.Embedding(t, d)
    self.blocks = nn.ModuleList([TorchBlock(d, heads, d_ff)
                                 for _ in range(layers)])
    self.ln = nn.LayerNorm(d, eps=LN_EPS)
    self.head = nn.Linear(d, out)
    self.causal = causal

  def forward(self, ids, tok_mask):
    b, t = ids.shape
    # contiguous: Opacus 1.6 ghost embedding norm uses .view(-1, 1)
    pos_ids = torch.arange(t, device=ids.device).expand(b, t).contiguous()
    x = self.embed(ids) + self.pos(pos_ids)
    allowed = tok_mask[:, None, None, :]
    if self.causal:
      allowed = allowed & torch.ones(t, t, dtype=torch.bool).tril()[None, None]
    for blk in self.blocks:
      x = blk(x, allowed)
    x = self.ln(x)
    if self.causal:
      return self.head(x)
    m = tok_mask.to(x.dtype)[..., None]
    return self.head((x * m).sum(1) / m.sum(1).clamp_min(1.0))


def torch_workload(name, lm_vocab, batch):
  """(model factory, inputs tuple, targets, is_lm) mirroring dp_overhead."""
  if name == "a":
    make = TorchMLP
    inputs = (torch.from_numpy(np.array(batch["x"])),)
    target = torch.from_numpy(np.array(batch["label"])).long()
  elif name == "b":
    make = lambda: TorchTransformer(8192, 128, 2, 4, 512, 64, 10, False)
    inputs = (torch.from_numpy(np.array(batch["ids"])).long(),
              torch.from_numpy(np.array(batch["mask"])))
    target = torch.from_numpy(np.array(batch["label"])).long()
  elif name == "c":
    make = lambda: TorchTransformer(lm_vocab, 384, 6, 6, 1536, 128, lm_vocab,
                                    True)
    ids = torch.from_numpy(np.array(batch["ids"])).long()
    inputs = (ids[:, :-1].contiguous(),
              torch.ones(ids[:, :-1].shape, dtype=torch.bool))
    target = ids[:, 1:].contiguous()
  else:
    raise ValueError(f"workload={name!r}; valid: a, b, c")
  return make, inputs, target, name == "c"


def load_jax_params(model, params):
  """Copies dp_overhead's nnx params into the same-named torch modules."""
  flat = {}

  def walk(prefix, tree):
    for k, v in tree.items():
      key = f"{prefix}{k}"
      if isinstance(v, dict):
        walk(key + ".", v)
      else:
        flat[key] = np.asarray(v)

  walk("", nnx.to_pure_dict(params))
  sd = {}
  for k, v in flat.items():
    mod, leaf = k.rsplit(".", 1)
    if leaf == "kernel":
      sd[f"{mod}.weight"] = torch.from_numpy(v.T.copy())
    elif leaf in ("embedding", "scale"):
      sd[f"{mod}.weight"] = torch.from_numpy(v.copy())
    elif leaf == "bias":
      sd[f"{mod}.bias"] = torch.from_numpy(v.copy())
    else:
      raise ValueError(f"unmapped JAX parameter {k!r}")
  model.load_state_dict(sd, strict=True)
  return model


def torch_loss(logits, target, is_lm):
  if is_lm:
    return nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                       target.reshape(-1))
  return nn.functional.cross_entropy(logits, target)


# ------------------------------------------------------------------- arms
def torch_nonprivate_arm(make, params, inputs, target, is_lm, lr):
  model = load_jax_params(make(), params)
  opt = torch.optim.SGD(model.parameters(), lr=lr)

  def step():
    opt.zero_grad(set_to_none=True)
    loss = torch_loss(model(*inputs), target, is_lm)
    loss.backward()
    opt.step()
  return step


def opacus_arm(mode, make, params, inputs, target, is_lm, lr, b):
  """One Opacus DP-SGD step: fixed batch of b, flat clip C, noise sigma."""
  import opacus  # pylint: disable=import-outside-toplevel
  model = load_jax_params(make(), params)
  opt = torch.optim.SGD(model.parameters(), lr=lr)
  ds = torch.utils.data.TensorDataset(*inputs, target)
  dl = torch.utils.data.DataLoader(ds, batch_size=b)
  engine = opacus.PrivacyEngine()
  with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    if mode == "ghost":
      model, opt, crit, _ = engine.make_private(
          module=model, optimizer=opt, data_loader=dl,
          criterion=nn.CrossEntropyLoss(), noise_multiplier=SIGMA,
          max_grad_norm=L2_CLIP, poisson_sampling=False,
          grad_sample_mode="ghost")
    else:
      model, opt, _ = engine.make_private(
          module=model, optimizer=opt, data_loader=dl,
          noise_multiplier=SIGMA, max_grad_norm=L2_CLIP,
          poisson_sampling=False, grad_sample_mode=mode)

  if mode == "ghost":
    def step():
      opt.zero_grad(set_to_none=True)
      logits = model(*inputs)
      if is_lm:  # per-sequence privacy unit: mean over T, then over B
        loss = crit(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                    shape=logits.shape)
      else:
        loss = crit(logits, target)
      loss.backward()
      opt.step()
  else:
    def step():
      opt.zero_grad(set_to_none=True)
      loss = torch_loss(model(*inputs), target, is_lm)
      loss.backward()
      opt.step()
  return step


def jax_arm(kind, loss_fn, params, batch, b, lr):
  """Returns (step, compile_s); kind: nonprivate or auto/ghost/vmap."""
  mask = jnp.ones((b,), bool)
  if kind == "nonprivate":
    opt = optax.sgd(lr)
    jstep = dp_overhead.make_step("nonprivate", loss_fn, b, opt)
  else:
    clip = clipped_grad(loss_fn, L2_CLIP, method=kind)
    opt = dpsgd(optax.sgd(lr), L2_CLIP, SIGMA, b, seed=0)

    @jax.jit
    def jstep(p, s, bt, m):
      g, _ = clip(p, bt, m, None)
      upd, s = opt.update(g, s, p)
      return optax.apply_updates(p, upd), s
  step, _, compile_s = dp_overhead.compile_step(jstep, params,
                                                opt.init(params), batch, mask)
  return step, compile_s


def init_loss_diff(make, params, inputs, target, is_lm, loss_fn, batch):
  model = load_jax_params(make(), params)
  with torch.no_grad():
    lt = float(torch_loss(model(*inputs), target, is_lm))
  lj = float(jnp.mean(loss_fn(params, batch, None)[0]))
  return abs(lt - lj), lj


# ------------------------------------------------------------------- main
def run_workload(name, args):
  loss_fn, params, batch, b = dp_overhead.workload(name, args.lm_vocab)
  loss_fold = dp_overhead.workload(name, args.lm_vocab, fold=True)[0]
  make, inputs, target, is_lm = torch_workload(name, args.lm_vocab, batch)
  arms, compile_s = {}, {}
  for arm in args.arms.split(","):
    if arm == "torch_nonprivate":
      arms[arm] = torch_nonprivate_arm(make, params, inputs, target, is_lm,
                                       args.lr)
    elif arm == "opacus":
      for mode in args.opacus_modes.split(","):
        arms[f"opacus_{mode}"] = opacus_arm(mode, make, params, inputs,
                                            target, is_lm, args.lr, b)
    elif arm == "jax_nonprivate":
      arms[arm], compile_s[arm] = jax_arm("nonprivate", loss_fold, params,
                                          batch, b, args.lr)
    elif arm == "jax_nonprivate_unfolded":
      arms[arm], compile_s[arm] = jax_arm("nonprivate", loss_fn, params,
                                          batch, b, args.lr)
    elif arm.startswith("jax_dp_"):
      arms[arm], compile_s[arm] = jax_arm(arm[len("jax_dp_"):], loss_fold,
                                          params, batch, b, args.lr)
    else:
      raise ValueError(f"unknown arm {arm!r}")
  for step in arms.values():
    for _ in range(args.warmup):
      step()
  times = {k: [] for k in arms}
  cpu = {k: [] for k in arms}  # process CPU time: less sensitive to load
  order = list(arms)
  rnd = random.Random(args.seed)
  t_start = time.perf_counter()
  for _ in range(args.rounds):
    rnd.shuffle(order)
    for k in order:
      for _ in range(args.per_round):
        c0, t0 = time.process_time(), time.perf_counter()
        arms[k]()
        times[k].append((time.perf_counter() - t0) * 1e3)
        cpu[k].append((time.process_time() - c0) * 1e3)
  diff, loss0 = init_loss_diff(make, params, inputs, target, is_lm, loss_fn,
                               batch)
  diff_fold, _ = init_loss_diff(make, params, inputs, target, is_lm,
                                loss_fold, batch)
  res = {"benchmark": "opacus_vs_trustjax", "workload": name, "batch": b,
         "num_params": int(sum(x.size for x in jax.tree.leaves(params))),
         "timed_steps_per_arm": args.rounds * args.per_round,
         "init_loss": round(loss0, 5),
         "init_loss_max_abs_diff": float(f"{diff:.2e}"),
         "init_loss_max_abs_diff_folded": float(f"{diff_fold:.2e}"),
         "timed_wall_s": round(time.perf_counter() - t_start, 1)}
  for k, v in times.items():
    res[f"{k}_ms"] = round(statistics.median(v), 2)
    res[f"{k}_iqr_ms"] = [round(float(x), 2)
                          for x in np.percentile(v, [25, 75])]
    res[f"{k}_cpu_ms"] = round(statistics.median(cpu[k]), 2)
  for k, v in compile_s.items():
    res[f"{k}_compile_s"] = round(v, 2)
  tb, jb = res.get("torch_nonprivate_ms"), res.get("jax_nonprivate_ms")
  for k in arms:
    if k.startswith("opacus_") and tb:
      res[f"{k}_ratio"] = round(res[f"{k}_ms"] / tb, 3)
    if k.startswith("jax_dp_") and jb:
      res[f"{k}_ratio"] = round(res[f"{k}_ms"] / jb, 3)
  if tb and jb:
    res["jax_over_torch_nonprivate"] = round(jb / tb, 3)
  if "torch_nonprivate" in arms and "jax_nonprivate" in arms:
    res["jax_over_torch_nonprivate_cpu"] = round(
        res["jax_nonprivate_cpu_ms"] / res["torch_nonprivate_cpu_ms"], 3)
  if tb and res.get("jax_nonprivate_unfolded_ms"):
    res["jax_unfolded_over_torch_nonprivate"] = round(
        res["jax_nonprivate_unfolded_ms"] / tb, 3)
    res["jax_unfolded_over_torch_nonprivate_cpu"] = round(
        res["jax_nonprivate_unfolded_cpu_ms"] / res["torch_nonprivate_cpu_ms"],
        3)
  opx = [k for k in arms if k.startswith("opacus_")]
  if opx and "jax_dp_auto" in arms:
    best_ms = min(opx, key=lambda k: res[f"{k}_ms"])
    res["opacus_best_ms_mode"] = best_ms
    res["jax_dp_auto_over_opacus_best_ms"] = round(
        res["jax_dp_auto_ms"] / res[f"{best_ms}_ms"], 3)
    if tb and jb:
      best_r = min(opx, key=lambda k: res[f"{k}_ratio"])
      res["opacus_best_ratio_mode"] = best_r
      res["jax_dp_auto_ratio_over_opacus_best_ratio"] = round(
          res["jax_dp_auto_ratio"] / res[f"{best_r}_ratio"], 3)
      res["claim_met"] = bool(res["jax_dp_auto_over_opacus_best_ms"] < 1 and
                              res["jax_dp_auto_ratio_over_opacus_best_ratio"]
                              < 1)
  return res


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workloads", default="a,b,c")
  ap.add_argument("--rounds", type=int, default=4)
  ap.add_argument("--per_round", type=int, default=1)
  ap.add_argument("--warmup", type=int, default=1)
  ap.add_argument("--lm_vocab", type=int, default=8192)
  ap.add_argument("--lr", type=float, default=1e-3)
  ap.add_argument("--threads", type=int, default=os.cpu_count())
  ap.add_argument("--seed", type=int, default=0)
  ap.add_argument("--arms", default="torch_nonprivate,opacus,jax_nonprivate,"
                  "jax_nonprivate_unfolded,"
                  "jax_dp_auto,jax_dp_ghost,jax_dp_vmap")
  ap.add_argument("--opacus_modes", default="hooks,ghost",
                  help="comma list of grad_sample_mode: hooks, ghost, "
                  "functorch, ew")
  args = ap.parse_args()
  torch.set_num_threads(args.threads)
  torch.manual_seed(args.seed)
  import opacus  # pylint: disable=import-outside-toplevel
  meta = {"torch": torch.__version__, "opacus": opacus.__version__,
          "jax": jax.__version__, "torch_threads": torch.get_num_threads(),
          "cpu_count": os.cpu_count(),
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
          "xla_flags": os.environ.get("XLA_FLAGS", ""), "machine": platform.machine(),
          "device": jax.devices()[0].device_kind}
  for name in args.workloads.split(","):
    load0 = os.getloadavg()[0]
    res = run_workload(name, args)
    res.update(meta)
    res["loadavg_1m_before_after"] = [round(load0, 2),
                                      round(os.getloadavg()[0], 2)]
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
  main()
