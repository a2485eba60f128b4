"""What a training run is configured with: the hyper-parameters (each with its default), the tower sizes, and the
one builder of the model dir's config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from recsys import schema

TOWER_DIMS = {"user_tower": {"id_dim": 64, "side_dim": 16, "hidden": 256}, "item_tower": {"id_dim": 64, "hidden": 256}}


class TrainingDataError(ValueError):
    """Training cannot start: bad settings, missing files or columns, or nothing to learn from."""


@dataclass(frozen=True)
class Hyperparameters:
    """The training recipe; the defaults are what `recsys train` uses.

    temperature scales the in-batch softmax; logq_weight scales the popularity correction (0 = none); id_dropout
    is the share of ids replaced by the OOV slot during training (cold start); id_weight_decay is the AdamW decay
    of the user / item id tables, weight_decay that of everything else. Training stops early when validation
    Recall@10 has not improved for `patience` epochs; `seed` seeds the split and training.
    """

    epochs: int = 20
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    id_weight_decay: float = 10.0
    temperature: float = 0.1
    logq_weight: float = 1.0
    id_dropout: float = 0.5
    patience: int = 3
    seed: int = 42

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 2 or self.temperature <= 0 or self.patience < 1:
            raise TrainingDataError(
                "epochs and patience must be >= 1, batch_size >= 2 and temperature > 0, got "
                f"{self.epochs}, {self.patience}, {self.batch_size}, {self.temperature}"
            )


def model_config(hp: Hyperparameters, **training: Any) -> dict[str, Any]:
    """config.json of a model dir: tower sizes, embedding size, and under "training" the hyper-parameters plus
    the run's facts (`training`: split, world size, best epoch, ...)."""
    return {**TOWER_DIMS, "embedding_dim": schema.EMBEDDING_DIM, "training": {**asdict(hp), **training}}
