"""Models: name -> Flax module mapping a padded GraphsTuple to (n_graph,) predictions."""

from __future__ import annotations

from gnn_batching.config import MODEL_NAMES, ModelConfig
from gnn_batching.models.dense import DenseMPEU, DenseSchNet
from gnn_batching.models.mpnn import MPEU, SchNet
from gnn_batching.models.painn import PaiNN

MODELS = {"mpeu": MPEU, "schnet": SchNet, "painn": PaiNN}
DENSE_MODELS = {"mpeu": DenseMPEU, "schnet": DenseSchNet}  # one graph per call (autobatch)
assert tuple(MODELS) == MODEL_NAMES  # the config schema validates names against this list
def make_model(cfg: ModelConfig, n_species: int):
    """The Flax module ``cfg`` names, for ``n_species`` atom types (one-hot input width).

    Args:
        cfg: the ``model`` config section.
        n_species: number of distinct atomic numbers in the dataset.

    Returns:
        A Flax module mapping a padded ``GraphsTuple`` to (n_graph,) standardised predictions.
    """
    table = DENSE_MODELS if cfg.form == "dense" else MODELS
    return table[cfg.name](n_species=n_species, **cfg.hyperparameters())


__all__ = ["DENSE_MODELS", "MODELS", "MPEU", "DenseMPEU", "DenseSchNet", "ModelConfig", "PaiNN", "SchNet",
           "make_model"]
