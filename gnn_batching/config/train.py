"""The ``train`` section: steps, optimiser, evaluation, devices, checkpoints."""

from __future__ import annotations

from dataclasses import dataclass

from gnn_batching.errors import ConfigError


@dataclass(frozen=True)
class TrainConfig:
    """The ``train`` section."""

    num_train_steps: int = 1000
    seed: int = 0  # model init AND training data order; repeats must differ here
    lr: float = 1e-4
    decay_steps: int = 100_000  # staircase exponential decay, as in the study
    decay_rate: float = 0.96
    staircase: bool = True
    eval_every: int = 0  # 0: evaluate only at the end
    eval_splits: tuple = ("val", "test")
    warmup_steps: int = 1  # steps reported apart from the steady state (the first always is)
    device_probe_batches: int = 8  # steady steps timed again, device step alone, after training (0: off)
    steps_per_call: int | str = "auto"  # training steps per dispatch (a lax.scan); auto: 8 on accelerators, 1 on CPU
    # a folder for JAX's persistent compilation cache (off by default: a warm cache hides compile cost)
    compilation_cache: str | None = None
    # data parallelism: 1, a number of local devices, or "all"; each device gets its own padded
    # batch from the batcher and the gradients are combined (weighted by real graphs)
    devices: int | str = 1
    # checkpoints (orbax) under the run directory, so a killed run resumes (`run --resume`): every
    # N steps and every M minutes, whichever comes first (0 turns a rule off); the last K are kept.
    # The defaults save nothing in a run shorter than 30 minutes and 10,000 steps (the quick start)
    checkpoint_every: int = 10_000
    checkpoint_minutes: float = 30.0
    checkpoint_keep: int = 2
    # TensorBoard event files (loss, step time, evaluation metrics) in <run>/tensorboard
    tensorboard: bool = False

    def __post_init__(self) -> None:
        if self.checkpoint_every < 0 or self.checkpoint_minutes < 0 or self.checkpoint_keep < 1:
            raise ConfigError("train.checkpoint_every and train.checkpoint_minutes must be >= 0 (0: off), "
                              f"train.checkpoint_keep >= 1; got {self.checkpoint_every}, {self.checkpoint_minutes}, "
                              f"{self.checkpoint_keep}")
        if (isinstance(self.devices, str) and self.devices != "all") or (isinstance(self.devices, int)
                                                                         and self.devices < 1):
            raise ConfigError(f"train.devices must be a number >= 1 or 'all', got {self.devices!r}")
        if self.num_train_steps < 1:
            raise ConfigError(f"train.num_train_steps must be >= 1, got {self.num_train_steps}")
        if self.seed < 0:
            raise ConfigError(f"train.seed must be >= 0, got {self.seed}")
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        if self.steps_per_call != "auto" and (isinstance(self.steps_per_call, bool)
                                              or not isinstance(self.steps_per_call, int) or self.steps_per_call < 1):
            raise ConfigError(f"train.steps_per_call must be 'auto' or an integer >= 1, got {self.steps_per_call!r}")
        if self.device_probe_batches < 0:
            raise ConfigError(f"train.device_probe_batches must be >= 0, got {self.device_probe_batches}")
        if self.eval_every < 0 or self.warmup_steps < 1:
            raise ConfigError("train.eval_every must be >= 0 and train.warmup_steps >= 1")
        if self.warmup_steps >= self.num_train_steps and self.num_train_steps > 1:
            raise ConfigError(f"train.warmup_steps ({self.warmup_steps}) must be < train.num_train_steps "
                              f"({self.num_train_steps})")
        for s in self.eval_splits:
            if s not in ("val", "test"):
                raise ConfigError(f"train.eval_splits: unknown split {s!r} (val, test)")
