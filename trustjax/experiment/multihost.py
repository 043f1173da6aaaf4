r"""Running the same trustjax program on many hosts (multi-controller JAX).

One process per host (or per GPU), every process runs the SAME program.
After `initialize`, `jax.devices()` lists the devices of all processes and
`jax.local_devices()` this process's own; a mesh over all devices
(`jax.make_mesh((jax.device_count(),), ("data",))`, or
`trustjax.federated.make_client_mesh()`) spans the hosts, and the same
`jit`/`shard_map` code that runs on one CPU or 8 local devices runs on it:
`psum` crosses hosts. Host-side randomness (Poisson sampling, client
selection) is a function of (seed, step/round), so every process computes
the same indices and loads only the rows of its own devices
(`trustjax.privacy.distributed.process_rows` / `shard_process_local`).

What to run on a real cluster. The same script on every host; it calls
`initialize` before any other JAX call:

    from trustjax.experiment import multihost
    multihost.initialize(auto=True)   # or from the JAX_* variables below
    import jax
    mesh = jax.make_mesh((jax.device_count(),), ("data",))
    ...   # make_dp_grad_fn(..., mesh) / run_round(..., mesh=make_client_mesh())

- SLURM (one task per host, or per GPU), Open MPI (`mpirun`), Cloud TPU
  pods: with `auto=True`, JAX detects the coordinator (the first host of the
  allocation), the number of processes and this process's id:
    srun --nodes=4 --ntasks-per-node=1 python train.py
- Anything else (ssh, a Kubernetes job without JAX's detection): on host i
  of P, with the same coordinator `host0:port` (process 0 listens on it):
    JAX_COORDINATOR_ADDRESS=host0:1234 JAX_NUM_PROCESSES=4 \
        JAX_PROCESS_ID=$i python train.py
  (or pass the three values as arguments).
- Launch scripts: `launch/train_dp.py` and `launch/simulate_fl.py` take
  `--coordinator_address --num_processes --process_id --multihost`
  (`launch.common.define_multihost_flags`) and call `initialize` with them
  (`launch.common.init_distributed`). Every process runs the whole job over
  a mesh of all devices; the workdir must be on a shared file system:
  process 0 writes config.json, metrics.jsonl, plots and summary.json, and
  all processes write the orbax checkpoints together.
- CPU hosts: cross-process collectives use gloo over TCP (JAX's default
  `jax_cpu_collectives_implementation='gloo'`; 'mpi' needs an MPI build).
- One machine, for tests: `spawn_local` starts P local processes with a
  free localhost port and `devices_per_process` simulated CPU devices each
  (tests/privacy/test_privacy_multihost.py runs 2 x 4 this way).

Only process 0 should write metrics, plots and summaries
(`is_main_process`); arrays that span several processes are read back with
`trustjax.privacy.distributed.to_host`, which every process must call.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import tempfile
import time
from typing import Mapping, Sequence

import jax

ENV_COORDINATOR = "JAX_COORDINATOR_ADDRESS"   # read by JAX itself as well
ENV_NUM_PROCESSES = "JAX_NUM_PROCESSES"
ENV_PROCESS_ID = "JAX_PROCESS_ID"


def initialize(coordinator_address: str | None = None,
               num_processes: int | None = None,
               process_id: int | None = None, *, auto: bool = False,
               cpu_devices_per_process: int | None = None,
               timeout_s: int = 300) -> bool:
  """Joins this process to a multi-process JAX job (`jax.distributed`).

  Arguments left as None are read from `JAX_COORDINATOR_ADDRESS`,
  `JAX_NUM_PROCESSES` and `JAX_PROCESS_ID`. With none of the three given
  and `auto=False`, nothing happens (a single-process run) and False is
  returned. With `auto=True` and nothing given, JAX detects them from
  SLURM / Open MPI / Cloud TPU / Kubernetes environments.

  Args:
    coordinator_address: "host:port" of process 0 (it binds that port).
    num_processes: P >= 1.
    process_id: this process's id in [0, P).
    auto: let JAX detect unset values from the cluster environment.
    cpu_devices_per_process: on CPU, the number of (simulated) devices of
      this process (`jax_num_cpu_devices`); None keeps JAX's setting.
    timeout_s: how long to wait for all processes to join.

  Returns:
    True if `jax.distributed` was initialized by this call.

  Must be called before any JAX computation (the backend reads the
  distributed client when it starts).
  """
  env = os.environ
  coordinator_address = coordinator_address or env.get(ENV_COORDINATOR)
  if num_processes is None and env.get(ENV_NUM_PROCESSES):
    num_processes = _int_env(ENV_NUM_PROCESSES)
  if process_id is None and env.get(ENV_PROCESS_ID):
    process_id = _int_env(ENV_PROCESS_ID)
  given = (coordinator_address, num_processes, process_id)
  if all(v is None for v in given) and not auto:
    return False
  if not auto and any(v is None for v in given):
    raise ValueError(
        "multi-host needs coordinator_address, num_processes and process_id "
        f"(flags or {ENV_COORDINATOR}/{ENV_NUM_PROCESSES}/{ENV_PROCESS_ID});"
        f" got coordinator_address={coordinator_address!r}, num_processes="
        f"{num_processes!r}, process_id={process_id!r}. On SLURM, Open MPI "
        "or Cloud TPU pass auto=True (--multihost) to detect them")
  if num_processes is not None and num_processes < 1:
    raise ValueError(f"num_processes={num_processes} must be >= 1")
  if process_id is not None and num_processes is not None and not (
      0 <= process_id < num_processes):
    raise ValueError(f"process_id={process_id} must lie in [0, "
                     f"num_processes={num_processes})")
  if cpu_devices_per_process is not None:
    if cpu_devices_per_process < 1:
      raise ValueError(f"cpu_devices_per_process={cpu_devices_per_process}"
                       " must be >= 1")
    jax.config.update("jax_num_cpu_devices", int(cpu_devices_per_process))
  jax.distributed.initialize(coordinator_address, num_processes, process_id,
                             initialization_timeout=int(timeout_s))
  return True


def _int_env(name: str) -> int:
  try:
    return int(os.environ[name])
  except ValueError:
    raise ValueError(f"{name}={os.environ[name]!r} is not an integer") from None


def is_main_process() -> bool:
  """True on process 0: the one that writes metrics, plots and summaries."""
  return jax.process_index() == 0


def sync(name: str) -> None:
  """Waits until every process has reached `sync(name)` (a barrier; the
  same names in the same order on every process). No-op on one process."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def prepare_workdir(workdir: str, config, **kwargs):
  """`trustjax.experiment.prepare_workdir` for a job on one or many hosts.

  Every process makes the same checks (a config mismatch raises the same
  error everywhere, so no process is left waiting at a barrier); only
  process 0 writes (or wipes, with `overwrite=True`); then all wait until
  it has. The workdir must be on a file system every host sees (as orbax
  checkpoints need anyway).
  """
  from trustjax.experiment.workdir import prepare_workdir as prepare
  if jax.process_count() == 1:
    return prepare(workdir, config, **kwargs)
  path = prepare(workdir, config, write=False, **kwargs)
  sync(f"trustjax.prepare_workdir.checked:{workdir}")
  if is_main_process():
    prepare(workdir, config, **kwargs)
  sync(f"trustjax.prepare_workdir.written:{workdir}")
  return path


def require_all_devices(field: str, value: int) -> None:
  """ValueError unless `value` (a job's device count, e.g. config field
  `dp.num_devices`) is every device of a multi-process job: with fewer, each
  process would train its own copy. No-op on one process."""
  if jax.process_count() > 1 and value != jax.device_count():
    raise ValueError(
        f"this job runs on {jax.process_count()} processes with "
        f"{jax.device_count()} devices in all: set config.{field}="
        f"{jax.device_count()} (the work is then sharded over every "
        f"device); got {field}={value}")


def free_port() -> int:
  """A TCP port on localhost that was free a moment ago."""
  with socket.socket() as s:
    s.bind(("localhost", 0))
    return s.getsockname()[1]


@dataclasses.dataclass(frozen=True)
class ProcessResult:
  """What one spawned process returned: exit status and merged output."""
  process_id: int
  returncode: int
  output: str


def spawn_local(argv: Sequence[str], num_processes: int, *,
                devices_per_process: int = 1,
                env: Mapping[str, str] | None = None,
                timeout_s: float = 120.0) -> list[ProcessResult]:
  """Runs `argv` as `num_processes` local processes of one JAX job.

  Each process gets `JAX_COORDINATOR_ADDRESS=localhost:<free port>`,
  `JAX_NUM_PROCESSES`, `JAX_PROCESS_ID` (for `initialize`) and
  `XLA_FLAGS=--xla_force_host_platform_device_count=devices_per_process`
  (simulated CPU devices; `jax_num_cpu_devices` set by `initialize`
  overrides it). When one process fails or the timeout passes, the others
  are killed (a collective would otherwise wait for the dead peer).

  Returns:
    One ProcessResult per process, in process order. Raises TimeoutError
    (with every process's output) if they did not finish in `timeout_s`.
  """
  if num_processes < 1:
    raise ValueError(f"num_processes={num_processes} must be >= 1")
  if devices_per_process < 1:
    raise ValueError(f"devices_per_process={devices_per_process} must be "
                     ">= 1")
  port = free_port()
  procs, logs = [], []
  for i in range(num_processes):
    e = dict(os.environ if env is None else env)
    e.update({ENV_COORDINATOR: f"localhost:{port}",
              ENV_NUM_PROCESSES: str(num_processes),
              ENV_PROCESS_ID: str(i),
              "XLA_FLAGS": (e.get("XLA_FLAGS", "") +
                            " --xla_force_host_platform_device_count="
                            f"{devices_per_process}").strip()})
    # Files, not pipes: a full pipe would block a process mid-collective.
    logs.append(tempfile.TemporaryFile("w+"))
    procs.append(subprocess.Popen(list(argv), env=e, stdout=logs[-1],
                                  stderr=subprocess.STDOUT, text=True))
  deadline = time.monotonic() + timeout_s
  timed_out = False
  try:
    while any(p.poll() is None for p in procs):
      failed = any(p.returncode not in (None, 0) for p in procs)
      if failed or time.monotonic() > deadline:
        timed_out = not failed
        break
      time.sleep(0.05)
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  results = []
  for i, (p, log) in enumerate(zip(procs, logs)):
    rc = p.wait()
    log.seek(0)
    results.append(ProcessResult(i, rc, log.read()))
    log.close()
  if timed_out:
    raise TimeoutError(f"{num_processes} processes did not finish in "
                       f"{timeout_s} s:\n" + format_results(results))
  return results


def format_results(results: Sequence[ProcessResult]) -> str:
  """Every process's exit status and output, for error messages."""
  return "\n".join(f"--- process {r.process_id} (exit {r.returncode}) ---\n"
                   f"{r.output}" for r in results)
