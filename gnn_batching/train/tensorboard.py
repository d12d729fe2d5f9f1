"""TensorBoard event files of a run (``train.tensorboard: true``), written with ``tensorboardX``.

Scalars: ``train/loss`` and ``train/step_ms`` (assembly + update) per step, ``train/graphs_seen``,
and ``<split>/rmse``, ``<split>/mae`` per evaluation, all against the training step. View them
with ``tensorboard --logdir results/runs``.
"""

from __future__ import annotations

from gnn_batching.errors import ConfigError


class TensorBoard:
    """A ``tensorboardX.SummaryWriter`` for one run's scalars."""

    def __init__(self, logdir: str):
        self.check_available()
        from tensorboardX import SummaryWriter

        self.writer = SummaryWriter(logdir=logdir)

    @staticmethod
    def check_available() -> None:
        """Raise a ConfigError naming the key when ``tensorboardX`` is not installed."""
        try:
            import tensorboardX  # noqa: F401
        except ImportError:
            raise ConfigError("train.tensorboard: needs tensorboardX; "
                              "pip install 'gnn-batching[tensorboard]'") from None

    def step(self, step: int, loss: float, step_ms: float, graphs_seen: int) -> None:
        """One training step's loss and time."""
        self.writer.add_scalar("train/loss", loss, step)
        self.writer.add_scalar("train/step_ms", step_ms, step)
        self.writer.add_scalar("train/graphs_seen", graphs_seen, step)

    def evaluation(self, step: int, split: str, metrics: dict) -> None:
        """One evaluation's RMSE and MAE (physical units)."""
        for k in ("rmse", "mae"):
            self.writer.add_scalar(f"{split}/{k}", metrics[k], step)

    def close(self) -> None:
        """Flush and close the event file."""
        self.writer.close()
