"""Where the JAX (XLA:CPU) non-private transformer step spends its time.

Issue #4, second point: "the JAX transformer step is 1.9x slower than
PyTorch's on this CPU; find out why". Profiles one forward+backward of
dp_overhead.py's workload (default c) in JAX (jax.profiler trace with XLA
op annotations, aggregated by HLO op name and by op kind) and in PyTorch
(torch.profiler, same architecture and weights from
`opacus_vs_trustjax.py`), then prints the top ops of each, one JSON line
per library.

  XLA_FLAGS=--xla_cpu_enable_xprof_traceme=true \
    python benchmarks/peers/transformer_profile.py --workload=c --steps=3

`--fold` profiles the token-folded JAX model (dense layers on [B*T, d],
the formulation of dp_overhead's non-private arm); without it, the [B, T, d]
model. `--time_only` skips profiling and prints median fwd+bwd ms of both, so XLA
flag variants can be compared, e.g. XLA_FLAGS=--xla_cpu_use_onednn=true.
"""

from __future__ import annotations

import argparse
import collections
import glob
import json
import os
import re
import statistics
import sys
import tempfile
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import dp_overhead  # noqa: E402  pylint: disable=wrong-import-position
import opacus_vs_trustjax as peers  # noqa: E402


def _kind(name):
  n = name.lower()
  if n.startswith("ynn_fusion") or n.startswith("xnn_fusion"):
    return n.split("_fusion")[0] + "_fusion(dot+epilogue)"
  for k in ("dot", "convolution", "scatter", "gather", "reduce", "transpose",
            "copy", "dynamic-update-slice", "custom-call", "sort"):
    if k in n:
      return k
  if "fusion" in n:
    return "fusion(other)"
  return re.sub(r"[.\d]+$", "", n)


def jax_profile(loss_fn, params, batch, steps, time_only):
  f = jax.jit(jax.grad(lambda p: jnp.mean(loss_fn(p, batch, None)[0])))
  jax.block_until_ready(f(params))
  ts = []
  for _ in range(steps):
    t0 = time.perf_counter()
    jax.block_until_ready(f(params))
    ts.append((time.perf_counter() - t0) * 1e3)
  out = {"lib": "jax", "fwd_bwd_ms": round(statistics.median(ts), 1),
         "xla_flags": os.environ.get("XLA_FLAGS", "")}
  if time_only:
    return out
  d = tempfile.mkdtemp()
  with jax.profiler.trace(d):
    for _ in range(steps):
      jax.block_until_ready(f(params))
  path = glob.glob(f"{d}/**/*.xplane.pb", recursive=True)[0]
  prof = jax.profiler.ProfileData.from_file(path)
  by_name = collections.Counter()
  for plane in prof.planes:
    if not plane.name.startswith("/host:"):
      continue
    for line in plane.lines:
      for ev in line.events:
        by_name[ev.name] += ev.duration_ns
  # Keep XLA op events (thunks are named after HLO instructions).
  hlo = f.lower(params).compile().as_text()
  names = set(re.findall(r"^\s*(?:ROOT )?%?([\w.\-]+) = ", hlo, re.M))
  ops = {k: v for k, v in by_name.items() if k in names}
  total = sum(ops.values())
  kinds = collections.Counter()
  for k, v in ops.items():
    kinds[_kind(k)] += v
  out["profiled_op_ms_per_step"] = round(total / 1e6 / steps, 1)
  out["by_kind_ms"] = {k: round(v / 1e6 / steps, 1)
                       for k, v in kinds.most_common()}
  out["top_ops_ms"] = {k: round(v / 1e6 / steps, 1)
                       for k, v in collections.Counter(ops).most_common(15)}
  other = collections.Counter({k: v for k, v in ops.items()
                               if not _kind(k).endswith("(dot+epilogue)")
                               and _kind(k) != "dot"})
  out["top_non_dot_ops_ms"] = {k: round(v / 1e6 / steps, 1)
                               for k, v in other.most_common(15)}
  out["top_op_shapes"] = {}
  for k in list(out["top_ops_ms"]) + list(out["top_non_dot_ops_ms"]):
    m = re.search(rf"%?{re.escape(k)} = ([^\s]+) ([\w\-]+)\(", hlo)
    if m:
      out["top_op_shapes"][k] = f"{m.group(2)} -> {m.group(1)}"
  return out


def torch_profile(make, params, inputs, target, is_lm, steps, time_only):
  model = peers.load_jax_params(make(), params)

  def fb():
    model.zero_grad(set_to_none=True)
    peers.torch_loss(model(*inputs), target, is_lm).backward()

  fb()
  ts = []
  for _ in range(steps):
    t0 = time.perf_counter()
    fb()
    ts.append((time.perf_counter() - t0) * 1e3)
  out = {"lib": "torch", "fwd_bwd_ms": round(statistics.median(ts), 1),
         "threads": torch.get_num_threads()}
  if time_only:
    return out
  with torch.profiler.profile(record_shapes=True) as prof:
    for _ in range(steps):
      fb()
  avg = prof.key_averages()
  rows = sorted(avg, key=lambda e: -e.self_cpu_time_total)[:15]
  out["top_ops_ms"] = {e.key: round(e.self_cpu_time_total / 1e3 / steps, 1)
                       for e in rows}
  mms = [e for e in prof.key_averages(group_by_input_shape=True)
         if e.key in ("aten::mm", "aten::addmm", "aten::bmm")]
  out["top_matmuls_ms"] = {
      f"{e.key}{e.input_shapes}": round(e.self_cpu_time_total / 1e3 / steps,
                                        1)
      for e in sorted(mms, key=lambda e: -e.self_cpu_time_total)[:12]}
  return out


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--workload", default="c")
  ap.add_argument("--steps", type=int, default=3)
  ap.add_argument("--lm_vocab", type=int, default=8192)
  ap.add_argument("--threads", type=int, default=os.cpu_count())
  ap.add_argument("--time_only", action="store_true")
  ap.add_argument("--fold", action="store_true",
                  help="JAX dense layers on [B*T, d] (dp_overhead fold=True)")
  ap.add_argument("--libs", default="jax,torch")
  args = ap.parse_args()
  torch.set_num_threads(args.threads)
  loss_fn, params, batch, _ = dp_overhead.workload(args.workload,
                                                   args.lm_vocab,
                                                   fold=args.fold)
  make, inputs, target, is_lm = peers.torch_workload(args.workload,
                                                     args.lm_vocab, batch)
  for lib in args.libs.split(","):
    load0 = os.getloadavg()[0]
    if lib == "jax":
      res = jax_profile(loss_fn, params, batch, args.steps, args.time_only)
    else:
      res = torch_profile(make, params, inputs, target, is_lm, args.steps,
                          args.time_only)
    res["workload"] = args.workload
    res["loadavg_1m_before_after"] = [round(load0, 2),
                                      round(os.getloadavg()[0], 2)]
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
  main()
