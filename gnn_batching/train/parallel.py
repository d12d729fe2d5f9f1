"""Data parallelism, device side: a mesh over devices (and hosts), steps under ``jax.shard_map``.

Each device receives its own padded batch (the loader stacks them on a leading axis,
:mod:`gnn_batching.batching.shard`); parameters and optimizer state are replicated. A device
computes the SUM of its real graphs' squared errors, their number and the gradient of that sum;
``jax.lax.psum`` adds all three over the mesh, and the update divides by the total number of real
graphs. The step therefore equals one step on the union of the devices' batches (tested on
4 CPU devices), however unevenly the graphs are spread.

Multi-host: :func:`initialize_distributed` calls ``jax.distributed.initialize()``, which reads
Slurm's and Open MPI's environment (or ``JAX_COORDINATOR_ADDRESS`` with ``JAX_NUM_PROCESSES``
and ``JAX_PROCESS_ID``); batches are placed with ``jax.make_array_from_process_local_data``, so
each host only ever touches its own share.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from gnn_batching.batching.shard import Shard
from gnn_batching.errors import ConfigError

AXIS = "data"


def initialize_distributed() -> None:
    """Join a multi-host run (before any other JAX call).

    ``jax.distributed.initialize()`` detects Slurm and Open MPI by itself; elsewhere set
    ``JAX_COORDINATOR_ADDRESS`` (host:port of process 0), ``JAX_NUM_PROCESSES`` and
    ``JAX_PROCESS_ID`` on every host.
    """
    n = os.environ.get("JAX_NUM_PROCESSES")
    i = os.environ.get("JAX_PROCESS_ID")
    jax.distributed.initialize(num_processes=int(n) if n else None, process_id=int(i) if i else None)


def resolve_devices(spec: int | str) -> int:
    """``train.devices`` -> devices to use on this host.

    Raises:
      ConfigError: more devices than this host has (named, with the CPU simulation hint).
    """
    have = jax.local_device_count()
    n = have if spec == "all" else int(spec)
    if n > have:
        raise ConfigError(f"train.devices: {n} asked, this host has {have} {jax.default_backend()} device(s)"
                          + ("; on CPU, XLA_FLAGS=--xla_force_host_platform_device_count=N simulates N"
                             if jax.default_backend() == "cpu" else ""))
    return n


def make_mesh(n_local: int) -> Mesh:
    """A 1-D ``data`` mesh: ``n_local`` devices of every process, process by process."""
    per_process: dict[int, list] = {}
    for d in jax.devices():
        per_process.setdefault(d.process_index, []).append(d)
    devices = [d for p in sorted(per_process) for d in sorted(per_process[p], key=lambda d: d.id)[:n_local]]
    return Mesh(np.array(devices), (AXIS,))


def setup(spec: int | str) -> tuple[Shard | None, Mesh | None]:
    """``(shard, mesh)`` for ``train.devices``; ``(None, None)`` for one device on one host."""
    n_local = resolve_devices(spec)
    shard = Shard(n_local, jax.process_index(), jax.process_count())
    if shard.n_global == 1:
        return None, None
    return shard, make_mesh(n_local)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """The leading (device) axis of a stacked batch split over the mesh."""
    return NamedSharding(mesh, P(AXIS))


def replicate(tree, mesh: Mesh):
    """A pytree (the train state) copied to every device of the mesh."""
    return jax.device_put(tree, NamedSharding(mesh, P()))


def put_global(arrays, sharding: NamedSharding):
    """This host's stacked device batches -> global arrays laid out over the mesh."""
    return jax.tree_util.tree_map(lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)), arrays)


def first_local(arrays):
    """The first local device's batch (host NumPy), e.g. to initialise a model's parameters."""
    def first(x):
        return np.asarray(x.addressable_shards[0].data)[0] if hasattr(x, "addressable_shards") else np.asarray(x)[0]

    return jax.tree_util.tree_map(first, arrays)


def _one(batch):
    return jax.tree_util.tree_map(lambda x: x[0], batch)


def make_parallel_steps(loss_sums: Callable, eval_sums: Callable, mesh: Mesh):
    """(train_step, eval_step) over a stacked, sharded batch, from a layout's per-device sums.

    Args:
      loss_sums: ``(params, batch) -> (sum of per-graph losses, real graphs)`` for one device.
      eval_sums: ``(params, batch) -> {"sse", "sae", "n"}`` for one device.
      mesh: the ``data`` mesh (:func:`make_mesh`).

    Returns:
      Jitted steps with the single-device steps' signatures; their results are totals over
      every device (the loss is the mean over all real graphs of the step).
    """

    def local_grads(params, batch):
        # differentiate w.r.t. this device's copy (cast to "varying"): the gradient is then this
        # device's alone, and the one psum below combines them. (The gradient w.r.t. the
        # replicated params themselves would already come back summed over the mesh.)
        own = jax.lax.pcast(params, AXIS, to="varying")
        (total, count), grads = jax.value_and_grad(loss_sums, has_aux=True)(own, _one(batch))
        return jax.lax.psum((total, count, grads), AXIS)

    def local_eval(params, batch):
        return jax.lax.psum(eval_sums(params, _one(batch)), AXIS)

    grads_all = jax.shard_map(local_grads, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P())
    eval_all = jax.shard_map(local_eval, mesh=mesh, in_specs=(P(), P(AXIS)), out_specs=P())

    @jax.jit
    def train_step(state, batch):
        total, count, grads = grads_all(state.params, batch)
        n = jnp.maximum(count, 1.0)
        grads = jax.tree_util.tree_map(lambda g: g / n, grads)
        return state.apply_gradients(grads=grads), {"loss": total / n}

    @jax.jit
    def eval_step(state, batch):
        return eval_all(state.params, batch)

    return train_step, eval_step
