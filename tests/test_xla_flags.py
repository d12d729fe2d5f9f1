"""The GPU scatter-add remedy (jaxlib 0.10.2-0.11.0, jax-ml/jax#38806): applied exactly on an
affected jaxlib with a CUDA plugin, never otherwise, and the user's XLA_FLAGS survive."""

from __future__ import annotations

import pytest

from gnn_batching import xla_flags
from gnn_batching.errors import ConfigError


@pytest.fixture
def fake(monkeypatch):
    def setup(version, plugin, started=False):
        monkeypatch.setattr(xla_flags, "jaxlib_version", lambda: version)
        monkeypatch.setattr(xla_flags, "cuda_plugin", lambda: plugin)
        monkeypatch.setattr(xla_flags, "_backend_started", lambda: started)

    return setup


@pytest.mark.parametrize("version", [(0, 10, 2), (0, 10, 7), (0, 11, 0)])
def test_applied_on_an_affected_jaxlib_with_a_cuda_plugin(fake, version):
    fake(version, "jax-cuda12-plugin")
    env = {}
    assert xla_flags.apply(env).startswith("applied")
    assert env["XLA_FLAGS"] == "--xla_backend_extra_options=-nvptx-allow-ftz-atomics"
    assert xla_flags.status()["scatter_fix"].startswith("applied")


@pytest.mark.parametrize("version, plugin", [((0, 10, 1), "jax-cuda12-plugin"), ((0, 11, 1), "jax-cuda12-plugin"),
                                             ((0, 10, 2), None), (None, None)])
def test_never_otherwise(fake, version, plugin):
    fake(version, plugin)
    env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}
    assert xla_flags.apply(env).startswith("not needed")
    assert env == {"XLA_FLAGS": "--xla_force_host_platform_device_count=2"}


def test_the_users_flags_survive(fake):
    fake((0, 10, 2), "jax-cuda13-plugin")
    env = {"XLA_FLAGS": "--xla_gpu_autotune_level=0 --xla_backend_extra_options=xla_foo=1"}
    xla_flags.apply(env)
    assert env["XLA_FLAGS"] == ("--xla_gpu_autotune_level=0 "
                                "--xla_backend_extra_options=xla_foo=1,-nvptx-allow-ftz-atomics")
    again = dict(env)
    assert xla_flags.apply(again) == "set by the user (XLA_FLAGS)" and again == env  # never added twice
    off = {"XLA_FLAGS": "--a=1", "GNN_BATCHING_SCATTER_FIX": "0"}
    assert xla_flags.apply(off).startswith("off") and off["XLA_FLAGS"] == "--a=1"


def test_too_late_is_refused_clearly(fake):
    fake((0, 10, 2), "jax-cuda12-plugin", started=True)
    with pytest.raises(ConfigError, match="must be in XLA_FLAGS before JAX starts its backend"):
        xla_flags.apply({})
    fake((0, 10, 2), None, started=True)
    assert xla_flags.apply({}).startswith("not needed")  # on the CPU a started backend is fine


def test_this_machine_needs_nothing_and_provenance_says_so():
    from gnn_batching.train.provenance import provenance

    assert xla_flags.apply({}).startswith("not needed")
    assert provenance()["scatter_fix"].startswith("not needed")
