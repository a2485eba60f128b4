"""What a training run is configured with: the hyper-parameters (each with its default), the tower sizes, and the
one builder of the model dir's config.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from recsys import schema

TOWER_DIMS = {"user_tower": {"id_dim": 64, "side_dim": 16, "hidden": 256}, "item_tower": {}}


class TrainingDataError(ValueError):
    """Training cannot start: bad settings, missing files or columns, or nothing to learn from."""


@dataclass(frozen=True)
class Hyperparameters:
    """The training recipe; the defaults are what `recsys train` uses, on MovieLens-100K and on synthetic data.

    Each step takes `batch_size` users; the user tower sees a random (1 - history_dropout) share of each one's
    recent items and must put its softmax mass, over the whole catalogue, on all of the user's training
    positives (full_softmax_loss; `temperature` divides the cosine scores). id_dropout / item_id_dropout are the
    shares of user / item ids replaced by the OOV slot in a step, so that features alone still place a new user
    or item. Training stops early when validation Recall@10 has not improved for `patience` epochs; `seed`
    seeds the split and training.
    """

    epochs: int = 300
    batch_size: int = 128
    lr: float = 3e-3
    weight_decay: float = 0.0
    temperature: float = 0.25
    history_dropout: float = 0.5
    id_dropout: float = 0.1
    item_id_dropout: float = 0.1
    patience: int = 20
    seed: int = 42

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1 or self.temperature <= 0 or self.patience < 1:
            raise TrainingDataError(
                "epochs and patience must be >= 1, batch_size >= 1 and temperature > 0, got "
                f"{self.epochs}, {self.patience}, {self.batch_size}, {self.temperature}"
            )
        rates = (self.history_dropout, self.id_dropout, self.item_id_dropout)
        if not all(0.0 <= rate < 1.0 for rate in rates):
            raise TrainingDataError(f"dropout rates must lie in [0, 1), got {rates}")


def model_config(hp: Hyperparameters, **training: Any) -> dict[str, Any]:
    """config.json of a model dir: tower sizes, embedding size, and under "training" the hyper-parameters plus
    the run's facts (`training`: split, world size, best epoch, ...)."""
    return {**TOWER_DIMS, "embedding_dim": schema.EMBEDDING_DIM, "training": {**asdict(hp), **training}}
