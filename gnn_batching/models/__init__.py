"""Models: name -> Flax module mapping a padded GraphsTuple to (n_graph,) predictions.

Each model registers itself in its own file (``@register_model``, :mod:`gnn_batching.plugins`);
a user's model registers the same way in the user's file.
"""

from __future__ import annotations

from gnn_batching.config import ModelConfig
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


__all__ = ["MPEU", "DenseMPEU", "DenseSchNet", "ModelConfig", "PaiNN", "SchNet", "make_model"]
