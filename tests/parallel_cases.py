"""Run by tests/test_parallel.py in a fresh process with 4 simulated CPU devices
(``XLA_FLAGS=--xla_force_host_platform_device_count=4`` must be set before JAX starts).

``python tests/parallel_cases.py equivalence`` prints JSON: for each model and layout, the largest
relative difference between a 4-device step on batches B1..B4 and a 1-device step on their union.
"""

from __future__ import annotations

import json
import os
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from conftest import random_store

from gnn_batching.batching import BatchingConfig, assemble, make_method
from gnn_batching.batching.shard import stack_batches
from gnn_batching.data.store import TargetStats
from gnn_batching.models import ModelConfig, make_model
from gnn_batching.train.layouts import init_graph, steps_for
from gnn_batching.train.parallel import batch_sharding, first_local, make_mesh, put_global, replicate
from gnn_batching.train.steps import init_state


def _rel(a, b) -> float:
    leaves = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
    return max(float(jnp.max(jnp.abs(x - y)) / (jnp.max(jnp.abs(y)) + 1e-12)) for x, y in leaves)


def equivalence() -> dict:
    assert jax.local_device_count() == 4, jax.devices()
    rng = np.random.default_rng(0)
    # uneven devices: 5, 3, 1 and 0 real graphs (an empty device), a single-atom and a zero-edge graph
    n = np.array([1, 3, 5, 8, 4, 7, 2, 6, 9])
    e = np.array([0, 0, 12, 30, 6, 20, 2, 18, 40])
    store = random_store(rng, n, e)
    y = store.targets["y"]
    parts = [np.array([0, 1, 2, 3, 4]), np.array([5, 6, 7]), np.array([8]), np.array([], np.int64)]
    stats = TargetStats(mean=0.2, std=1.3)
    mesh = make_mesh(4)
    sharding = batch_sharding(mesh)
    # plain SGD: the parameters then move by the combined gradient itself (Adam divides by
    # sqrt(v) + 1e-8, which turns float noise in a ~0 gradient into a visible step)
    tx = optax.sgd(0.05)
    out = {}
    for name in ("schnet", "mpeu"):
        model = make_model(ModelConfig(name=name, latent_size=8, message_passing_steps=2, n_rbf=16), store.n_species)
        # disjoint union: every device batch padded to one shape; the union padded to one bigger shape
        dev = stack_batches([assemble(store, p, (64, 128, 7), y) for p in parts])
        union = assemble(store, np.concatenate(parts), (64, 128, 10), y)
        # slots: autobatch's own batches of the same graphs, one step per device
        cfg = BatchingConfig(method="autobatch", autobatch_mode="vmap", batch_size=6, buckets=2)
        ab_parts = _slot_steps(make_method(cfg, store, np.arange(9)), store, parts)
        ab_union = _slot_steps(make_method(cfg, store, np.arange(9)), store, [np.concatenate(parts)])[0]
        for layout, devb, one in (("disjoint-union", dev.arrays, union.arrays),
                                  ("slots", stack_batches(ab_parts).arrays, ab_union.arrays)):
            single_train, single_eval = steps_for(layout, model, stats)
            par_train, par_eval = steps_for(layout, model, stats, mesh)
            state = init_state(model, tx, init_graph(layout, first_local(devb)), seed=0)
            s1, m1 = single_train(state, one)
            s1, m1b = single_train(s1, one)
            g = put_global(devb, sharding)
            s4, m4 = par_train(replicate(state, mesh), g)
            s4, m4b = par_train(s4, g)
            e1, e4 = single_eval(s1, one), par_eval(s4, g)
            out[f"{name}/{layout}"] = {
                "loss": [float(m1["loss"]), float(m4["loss"]), float(m1b["loss"]), float(m4b["loss"])],
                "params_rel": _rel(s4.params, s1.params),
                "moved": _rel(s1.params, state.params),
                "eval": [{k: float(v) for k, v in e1.items()}, {k: float(v) for k, v in e4.items()}],
                "sharded": str(g.mask.sharding.spec) if hasattr(g, "mask") else str(g[0].mask.sharding.spec),
            }
    return out


def _slot_steps(method, store, parts):
    """One autobatch step per entry of ``parts``, holding exactly those graphs; every step gets
    the same slot counts (the most any part needs), so the steps stack."""
    from gnn_batching.batching.plan import EpochPlan

    groups = [method.bucket_of(np.asarray(p, np.int64)) for p in parts]
    method.slots = np.max([np.bincount(g, minlength=len(method.buckets)) for g in groups] + [np.ones(len(method.buckets), int)],
                          axis=0).astype(np.int64)
    plans = [EpochPlan(np.asarray(p, np.int64), np.array([0, len(p)]), np.array([method.fixed_shape()]), groups=g)
             for p, g in zip(parts, groups)]
    return [next(iter(method.iterate(store, plan, store.targets["y"]))) for plan in plans]


def abstract() -> dict:
    """The abstract batch of an example holding ONE host-local device (as on one of 4 hosts)."""
    from gnn_batching.train.precompile import abstract_batch

    rng = np.random.default_rng(0)
    store = random_store(rng, np.array([3, 4]), np.array([5, 6]))
    one = stack_batches([assemble(store, np.array([0, 1]), (8, 12, 3), store.targets["y"])])
    ab = abstract_batch(one.arrays, (16, 24, 4), batch_sharding(make_mesh(4)))
    return {"leading": sorted({x.shape[0] for x in jax.tree_util.tree_leaves(ab)}),
            "rows": [list(ab.graph.nodes.shape)]}


if __name__ == "__main__":
    print(json.dumps({"equivalence": equivalence, "abstract": abstract}[sys.argv[1]]()))
