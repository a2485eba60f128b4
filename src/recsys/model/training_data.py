"""Training examples: one per user with training positives. Each holds the user's features, their latest
MAX_HISTORY positive items (the user tower's history input, thinned at random while training) and the weights of
all their positives over the catalogue (the targets of the full softmax), batch by batch as device tensors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys import schema
from recsys.model.config import Hyperparameters, TrainingDataError
from recsys.model.dataset import Dataset, interaction_weights, read_dataset
from recsys.model.inputs import MAX_HISTORY, FeatureSpace

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
    """The training users as device tensors: features, recent history and positive weights per catalogue item."""

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
        # row r of user_features is vocabulary user r (row 0: OOV, no examples)
        self.user_features = to_device(features.encode_users(user_table), device)
        self.item_features = to_device(features.encode_items(data.items, text_cache), device)
        user_rows = features.user_indices(positives[schema.USER_ID].tolist())
        self.users = torch.from_numpy(np.unique(user_rows)).to(device)
        # positives are time-ordered per user: the newest MAX_HISTORY known items of each are their history
        known_items = features.item_indices(positives[schema.ITEM_ID].tolist())
        from_end = positives.groupby(schema.USER_ID, sort=False).cumcount(ascending=False).to_numpy()
        recent = from_end < MAX_HISTORY
        history = np.zeros((len(features.user_ids) + 1, MAX_HISTORY), dtype=np.int64)  # oldest .. newest
        history[user_rows[recent], MAX_HISTORY - 1 - from_end[recent]] = known_items[recent]
        self.history = torch.from_numpy(history).to(device)
        # targets: a sparse user-row x catalogue-column matrix of positive weights (repeats add up)
        item_rows = pd.Index(data.items[schema.ITEM_ID]).get_indexer(positives[schema.ITEM_ID])
        indices = torch.from_numpy(np.stack([user_rows, item_rows.astype(np.int64)]))
        weights = torch.from_numpy(positives[WEIGHT].to_numpy(dtype=np.float32))
        shape = (len(features.user_ids) + 1, len(data.items))
        self.targets = torch.sparse_coo_tensor(indices, weights, shape, check_invariants=True).coalesce().to(device)
        self.n_positives = len(positives)

    def __len__(self) -> int:
        return len(self.users)

    def batch(
        self, rows: torch.Tensor, features: FeatureSpace, hp: Hyperparameters, generator: torch.Generator
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], torch.Tensor]:
        """User tower inputs, item tower inputs (the whole catalogue) and dense targets [len(rows), n_items] for
        these example rows. Ids are dropped to the OOV slot and history items left out, each at random."""
        users = self.users[rows]
        inputs = _gather(self.user_features, users)
        inputs["user"] = _drop_ids(inputs["user"], hp.id_dropout, generator)
        inputs.update(features.history_features(_drop_ids(self.history[users], hp.history_dropout, generator)))
        inputs = to_device(inputs, users.device)
        items = dict(self.item_features)
        items["item"] = _drop_ids(items["item"], hp.item_id_dropout, generator)
        return inputs, items, self.targets.index_select(0, users).to_dense()
