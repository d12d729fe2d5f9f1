"""Models: name -> Flax module mapping a padded GraphsTuple to (n_graph,) predictions.

Each model registers itself in its own file (``@register_model``, :mod:`gnn_batching.plugins`);
a user's model registers the same way in the user's file.
"""

from __future__ import annotations

from gnn_batching.config import ModelConfig
from gnn_batching.errors import ConfigError
from gnn_batching.models.dense import DenseMPEU, DenseSchNet
from gnn_batching.models.mpnn import MPEU, SchNet
from gnn_batching.models.painn import PaiNN
from gnn_batching.plugins import model_entry


def make_model(cfg: ModelConfig, n_species: int):
    """The Flax module ``cfg`` names, for ``n_species`` atom types (one-hot input width).

    Args:
        cfg: the ``model`` config section.
        n_species: number of distinct atomic numbers in the dataset.

    Returns:
        A Flax module mapping a padded ``GraphsTuple`` to (n_graph,) standardised predictions
        (``model.form: dense``: one graph's prediction, for autobatch).
    """
    entry = model_entry(cfg.name)
    cls = entry.dense if cfg.form == "dense" else entry.cls
    return cls(n_species=n_species, **cfg.hyperparameters())


def check_model_output(model, graph, cfg: ModelConfig) -> None:
    """Refuse a model that does not map a padded batch to one prediction per graph slot.

    Traced abstractly (``jax.eval_shape``: no compilation, no data on the device) on a batch of
    the run's own shape, so a plug-in model with the wrong output is refused before a run
    directory exists.

    Raises:
      ConfigError: naming ``model.name``, the file that defines the model, what it returned and
        what it must return (or the exception its first call raised).
    """
    import jax

    entry = model_entry(cfg.name)
    n_graph = int(graph.n_node.shape[0])
    where = f"model.name {cfg.name!r} ({entry.cls.__qualname__}, {entry.origin})"
    try:
        out, _ = jax.eval_shape(lambda g: model.init_with_output(jax.random.PRNGKey(0), g), graph)
    except Exception as exc:  # the user's model: name it and what it raised, not a JAX traceback
        raise ConfigError(f"{where}: calling it on a padded batch of {n_graph} graph slots failed: "
                          f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None
    shape = getattr(out, "shape", None)
    if shape != (n_graph,) or not jax.numpy.issubdtype(out.dtype, jax.numpy.floating):
        got = f"{type(out).__name__} of shape {shape}" if shape is not None else type(out).__name__
        raise ConfigError(f"{where}: returns a {got} (dtype {getattr(out, 'dtype', '?')}) for a padded batch of "
                          f"{n_graph} graph slots; a model must return one floating prediction per slot, shape "
                          f"({n_graph},)")


__all__ = ["MPEU", "DenseMPEU", "DenseSchNet", "ModelConfig", "PaiNN", "SchNet", "check_model_output", "make_model"]
