"""Training examples: the weighted positives of the training part, each with its user's causal history, as the
device tensors the towers take, batch by batch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys import schema
from recsys.model.config import TrainingDataError
from recsys.model.dataset import Dataset, interaction_weights, read_dataset
from recsys.model.inputs import MAX_HISTORY, OOV, FeatureSpace

WEIGHT = "_weight"  # column of time_ordered_positives: how much the row counts as a positive


def read_training_data(data_dir: Path) -> Dataset:
    """The three parquet files (dataset.read_dataset), with bad input turned into TrainingDataError."""
    try:
        data = read_dataset(data_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainingDataError(str(exc)) from exc
    if data.interactions.empty:
        raise TrainingDataError(f"{data_dir}: no interaction refers to a known user and item")
    return data


def time_ordered_positives(interactions: pd.DataFrame) -> pd.DataFrame:
    """Rows that count as positives with their weight (WEIGHT column), time-ordered per user."""
    weighted = interactions.assign(**{WEIGHT: interaction_weights(interactions)})
    weighted = weighted[weighted[WEIGHT] > 0]
    return weighted.sort_values([schema.USER_ID, schema.TIMESTAMP], kind="stable").reset_index(drop=True)


def causal_history(user_rows: np.ndarray, item_rows: np.ndarray) -> np.ndarray:
    """[n, MAX_HISTORY] item indices each example's user had before it (0-padded); rows grouped by user.

    Training on earlier items only mirrors serving (the item to predict is never in the history) and never
    leaks the target into the user's input.
    """
    n = len(user_rows)
    position = np.arange(n)
    group_start = np.zeros(n, dtype=np.int64)
    starts = np.flatnonzero(np.r_[True, user_rows[1:] != user_rows[:-1]])
    group_start[starts] = starts
    group_start = np.maximum.accumulate(group_start)
    offsets = position[:, None] - np.arange(MAX_HISTORY, 0, -1)[None, :]  # oldest .. newest
    valid = offsets >= group_start[:, None]
    return np.where(valid, item_rows[np.clip(offsets, 0, None)], OOV).astype(np.int64)


def to_device(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device) for name, tensor in tensors.items()}


def _gather(tensors: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: tensor[rows] for name, tensor in tensors.items()}


def _drop_ids(ids: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Replace ids by the OOV slot at random, so that slot learns to stand for an unseen user / item."""
    if rate <= 0:
        return ids
    drop = torch.rand(ids.shape, generator=generator, device=ids.device) < rate
    return torch.where(drop, torch.zeros_like(ids), ids)


class TrainingExamples:
    """The training positives as device tensors, plus the user / item feature tables they index into."""

    def __init__(
        self,
        features: FeatureSpace,
        data: Dataset,
        positives: pd.DataFrame,
        device: torch.device,
        text_cache: Path | None,
    ) -> None:
        vocab_users = pd.DataFrame({schema.USER_ID: [None, *features.user_ids]})
        user_table = vocab_users.merge(data.users, on=schema.USER_ID, how="left") if len(data.users) else vocab_users
        # row r of user_features is vocabulary user r (row 0: OOV); history is per example, not per user
        self.user_features = to_device(features.encode_users(user_table), device)
        self.item_features = to_device(features.encode_items(data.items, text_cache), device)
        item_rows = pd.Index(data.items[schema.ITEM_ID]).get_indexer(positives[schema.ITEM_ID])
        user_rows = features.user_indices(positives[schema.USER_ID].tolist())
        self.user_rows = torch.from_numpy(user_rows).to(device)
        self.item_rows = torch.from_numpy(item_rows.astype(np.int64)).to(device)
        self.weights = torch.from_numpy(positives[WEIGHT].to_numpy(dtype=np.float32)).to(device)
        item_ids = features.item_indices(positives[schema.ITEM_ID].tolist())
        history = features.history_features(torch.from_numpy(causal_history(user_rows, item_ids)))
        self.history = to_device(history, device)
        counts = np.bincount(item_rows, minlength=len(data.items)).astype(np.float64)
        # log of how often each item is a column of a batch (the positives' item distribution): the log-Q term
        self.log_q = torch.from_numpy(np.log(np.maximum(counts, 1.0) / len(positives)).astype(np.float32)).to(device)

    def __len__(self) -> int:
        return len(self.user_rows)

    def batch(
        self, rows: torch.Tensor, id_dropout: float, generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """User and item tower inputs for these example rows (ids randomly dropped to the OOV slot)."""
        users = _gather(self.user_features, self.user_rows[rows])
        users["user"] = _drop_ids(users["user"], id_dropout, generator)
        users.update(_gather(self.history, rows))
        items = _gather(self.item_features, self.item_rows[rows])
        items["item"] = _drop_ids(items["item"], id_dropout, generator)
        return users, items
