"""The faster formulation of MPEU and SchNet (issue 37) computes the same functions as the plain one.

``models.mpnn`` reuses the softplus's exponential in its derivative, multiplies MPEU's node parts
per node before gathering, and runs SchNet's three first filter layers as one matmul;
``models.reference`` keeps the plain transcription. Same parameters (tree, names, initial
values), and the same predictions, loss and gradients within float tolerance, on padded batches
with both padding layouts and on real-sized QM9-like graphs.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import random_store

from gnn_batching.batching.assemble import assemble
from gnn_batching.data.store import TargetStats
from gnn_batching.models import ModelConfig, make_model
from gnn_batching.models.common import LOG2, shifted_softplus
from gnn_batching.models.reference import REFERENCE, reference_shifted_softplus
from gnn_batching.train.steps import make_loss


def test_shifted_softplus_values_and_slope_equal_jax_softplus():
    x = jnp.asarray(np.concatenate([np.linspace(-120, 120, 4001), [0.0, -0.0, 1e-8, -1e-8, 88.0, -88.0, 17.0]]),
                    jnp.float32)
    np.testing.assert_allclose(shifted_softplus(x), jax.nn.softplus(x) - LOG2, rtol=1e-6, atol=1e-7)
    ours = jax.vmap(jax.grad(shifted_softplus))(x)
    theirs = jax.vmap(jax.grad(reference_shifted_softplus))(x)
    # equal within float32 rounding of a slope in [0, 1] (jax's own rule, through logaddexp, loses
    # relative accuracy where the slope is below ~1e-5); ours is the sigmoid to a few ulp everywhere
    np.testing.assert_allclose(ours, theirs, rtol=1e-6, atol=5e-7)
    exact = 1.0 / (1.0 + np.exp(-np.asarray(x, np.float64)))
    np.testing.assert_allclose(ours, exact, rtol=2e-6, atol=1e-37)
    assert np.all(np.isfinite(ours)) and float(shifted_softplus(jnp.float32(0.0))) == 0.0
    # second derivative (jvp of the custom rule) agrees too: sigmoid' = s (1 - s)
    second = jax.vmap(jax.grad(jax.grad(shifted_softplus)))(x[:4001:40])
    ref = jax.vmap(jax.grad(jax.grad(reference_shifted_softplus)))(x[:4001:40])
    np.testing.assert_allclose(second, ref, rtol=1e-5, atol=5e-7)


def _batch(store, idx, shape, pad_edges):
    return assemble(store, idx, shape, store.targets["y"], pad_edges)


CASES = [
    # name, hyperparameters (small for speed; the study's sizes in the slow case), nodes, edges
    ("schnet", {"latent_size": 8, "n_rbf": 12}),
    ("mpeu", {"latent_size": 8, "n_rbf": 12}),
    ("schnet", {"message_passing_steps": 2, "latent_size": 6, "n_rbf": 5}),
]


@pytest.mark.parametrize("name, hp", CASES)
@pytest.mark.parametrize("pad_edges", ["hub", "spread"])
def test_fast_models_equal_the_plain_formulation(name, hp, pad_edges):
    rng = np.random.default_rng(4)
    store = random_store(rng, [3, 6, 1, 5, 4], [4, 12, 0, 9, 7], n_species=5)
    b = _batch(store, np.arange(5), (24, 40, 8), pad_edges)
    fast = make_model(ModelConfig(name=name, **hp), 5)
    plain = REFERENCE[name](n_species=5, **hp)
    params = fast.init(jax.random.PRNGKey(3), b.graph)
    plain_params = plain.init(jax.random.PRNGKey(3), b.graph)
    # same parameter tree, same initial values: checkpoints and the study comparison hold
    assert jax.tree_util.tree_structure(params) == jax.tree_util.tree_structure(plain_params)
    for x, y in zip(jax.tree_util.tree_leaves(params), jax.tree_util.tree_leaves(plain_params)):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_allclose(fast.apply(params, b.graph), plain.apply(params, b.graph), rtol=2e-5, atol=2e-6)
    stats = TargetStats(0.3, 2.0)
    lf = jax.jit(jax.value_and_grad(make_loss(fast, stats)))
    lp = jax.jit(jax.value_and_grad(make_loss(plain, stats)))
    loss, grads = lf(params, b.graph, b.targets, b.graph_mask)
    ref_loss, ref_grads = lp(params, b.graph, b.targets, b.graph_mask)
    np.testing.assert_allclose(loss, ref_loss, rtol=2e-5)
    leaves, ref_leaves = jax.tree_util.tree_leaves_with_path(grads), jax.tree_util.tree_leaves(ref_grads)
    scale = max(float(np.max(np.abs(r))) for r in ref_leaves)  # float32 rounding, relative to the gradient
    for (path, g), r in zip(leaves, ref_leaves):
        np.testing.assert_allclose(g, r, rtol=2e-4, atol=1e-6 * scale, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["schnet", "mpeu"])
def test_fast_models_equal_the_plain_formulation_at_the_studys_size(name):
    """Width 64, 150 Gaussians, three blocks, fully connected molecules of QM9's sizes."""
    rng = np.random.default_rng(5)
    n = rng.integers(8, 24, 12)
    store = random_store(rng, n, n * (n - 1), n_species=5)
    b = _batch(store, np.arange(12), (int(n.sum()) + 9, int((n * (n - 1)).sum()) + 50, 16), "hub")
    fast, plain = make_model(ModelConfig(name=name), 5), REFERENCE[name](n_species=5)
    params = fast.init(jax.random.PRNGKey(0), b.graph)
    stats = TargetStats(0.0, 1.0)
    loss, grads = jax.jit(jax.value_and_grad(make_loss(fast, stats)))(params, b.graph, b.targets, b.graph_mask)
    ref_loss, ref_grads = jax.jit(jax.value_and_grad(make_loss(plain, stats)))(params, b.graph, b.targets,
                                                                              b.graph_mask)
    np.testing.assert_allclose(loss, ref_loss, rtol=1e-5)
    scale = max(float(np.max(np.abs(r))) for r in jax.tree_util.tree_leaves(ref_grads))
    for g, r in zip(jax.tree_util.tree_leaves(grads), jax.tree_util.tree_leaves(ref_grads)):
        np.testing.assert_allclose(g, r, rtol=1e-3, atol=1e-6 * scale)
