"""gnn_batching: which way of batching graphs trains fastest in JAX, and does it change learning?"""

__version__ = "0.1.0"

from gnn_batching.data.datasets import register_dataset


def __getattr__(name: str):
    # lazy: importing the package must not import JAX/jraph
    if name == "dynamically_batch":
        from gnn_batching.batching.jraph_compat import dynamically_batch

        return dynamically_batch
    raise AttributeError(name)


__all__ = ["__version__", "dynamically_batch", "register_dataset"]
