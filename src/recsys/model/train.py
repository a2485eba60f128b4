"""Train the two-tower model: a softmax over the whole catalogue per user, from a thinned-out history.

`train(data_dir, out_dir, hp)` reads the three parquet files, splits the interactions (dataset.make_split),
trains on the training part with early stopping on validation Recall@10, fits the rerank stage (item-item
weights and blend, chosen on validation: rerank_offline.py), and writes the model dir and metrics.json (the
served model, the towers alone and the baselines on the test part). Under torchrun it runs DistributedDataParallel (see
distributed.py): rank 0 alone validates and writes.

Where the parts live: hyper-parameters and tower sizes in config.py, the examples in training_data.py, the loss
in loss.py, the towers in towers.py, the feature encoding in inputs.py.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from recsys import schema
from recsys.contract import GATE_METRIC  # early stopping keeps the epoch with its best validation value
from recsys.model import evaluate
from recsys.model.artifacts import TrainedModel, save_model
from recsys.model.config import TOWER_DIMS, Hyperparameters, TrainingDataError, model_config
from recsys.model.dataset import SPLIT_KINDS, Dataset, Split, make_split
from recsys.model.distributed import Runtime, agree_to_stop, rank_share, runtime_for, wait_for_all, wrap_model
from recsys.model.inputs import FeatureSpace, fit_feature_space, fit_text_content, inputs_off, recent_positive_items
from recsys.model.loss import full_softmax_loss
from recsys.model.towers import ItemTower, TwoTower, UserTower
from recsys.model.training_data import (
    TrainingExamples,
    read_training_data,
    time_ordered_positives,
    to_device,
)


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    loss: float
    valid: dict[str, float]
    interactions_per_s: float
    improved: bool


@dataclass
class FitResult:
    model: TwoTower  # the best epoch's weights, on CPU, in eval mode (rank 0; other ranks: last weights)
    features: FeatureSpace
    best_epoch: int
    best_valid: float
    inputs_off: list[str]  # optional inputs the data could not feed (inputs.inputs_off)


def train(
    data_dir: Path,
    out_dir: Path,
    hp: Hyperparameters | None = None,
    *,
    split: str = "temporal",
    device: str = "auto",
    text_cache: Path | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> Path:
    """Train on `data_dir`'s parquet files and write the model dir `out_dir` (returned).

    hp: the recipe (default: Hyperparameters()). split: "temporal" (each user's latest interactions held out) or
    "random"; the model trains on the training part, keeps its best validation epoch and is scored against the
    baselines on the test part (metrics.json). device: auto (CUDA when available), cpu or cuda. text_cache:
    where MiniLM vectors are cached (default Settings.cache_dir / "text"). `on_epoch` receives an EpochReport
    after every epoch (rank 0 only). Raises TrainingDataError on bad arguments or unusable data; nothing is
    written then.
    """
    hp = hp or Hyperparameters()
    if split not in SPLIT_KINDS:
        raise TrainingDataError(f"split must be one of {', '.join(SPLIT_KINDS)}, got {split!r}")
    with runtime_for(device) as runtime:
        data = read_training_data(data_dir)
        parts = make_split(data.interactions, split, hp.seed)
        result = fit(data, parts, hp, runtime, text_cache, on_epoch)
        if runtime.is_main:
            _evaluate_and_save(result, data, data_dir, out_dir, split, hp, runtime.world_size, text_cache)
        wait_for_all(runtime)  # no rank returns before the model dir exists
    return Path(out_dir)


def fit(
    data: Dataset,
    parts: Split,
    hp: Hyperparameters,
    runtime: Runtime,
    text_cache: Path | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> FitResult:
    """Train the towers on parts.train, early-stopping on parts.valid; the loop behind `train`."""
    torch.manual_seed(hp.seed)
    positives = time_ordered_positives(parts.train)
    if positives.empty:
        raise TrainingDataError("the training part of the split holds no positive interactions")
    user_index, item_index = pd.Index(data.users[schema.USER_ID]), pd.Index(data.items[schema.ITEM_ID])
    valid_set = evaluate.build_eval_set(parts.train, parts.valid, user_index, item_index)
    features = fit_feature_space(data.users, data.items, positives)
    examples = TrainingExamples(features, data, positives, runtime.device, text_cache)
    model = TwoTower(
        UserTower(**features.user_tower_sizes(), **TOWER_DIMS["user_tower"]),
        ItemTower(**features.item_tower_sizes(), **TOWER_DIMS["item_tower"]),
    ).to(runtime.device)
    if features.use_text:
        _set_item_content(model, examples.item_features["text"], item_index.get_indexer(features.item_ids))
    optimizer = _optimizer(model, hp)
    wrapped = wrap_model(model, runtime)

    best_state, best_valid, best_epoch, stale = copy.deepcopy(model.state_dict()), -1.0, 0, 0
    for epoch in range(1, hp.epochs + 1):
        started = time.perf_counter()
        loss = _run_epoch(wrapped, optimizer, examples, features, runtime, hp, epoch_seed=hp.seed * 1000 + epoch)
        seconds = time.perf_counter() - started
        improved = False
        if runtime.is_main:
            valid = (
                _validation_metrics(model, features, data, parts, valid_set, examples.item_features)
                if len(valid_set.user_rows)
                else {GATE_METRIC: 0.0}
            )
            improved = valid[GATE_METRIC] > best_valid
            if improved:
                best_state, best_valid, best_epoch = (
                    copy.deepcopy(model.state_dict()),
                    valid[GATE_METRIC],
                    epoch,
                )
            if on_epoch is not None:
                on_epoch(EpochReport(epoch, loss, valid, examples.n_positives / seconds, improved))
        stale = 0 if improved else stale + 1
        if agree_to_stop(stale >= hp.patience, runtime):
            break
    if runtime.is_main:
        model.load_state_dict(best_state)
    return FitResult(model.cpu().eval(), features, best_epoch, best_valid, inputs_off(data.users, data.items))


def _optimizer(model: TwoTower, hp: Hyperparameters) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)


@torch.no_grad()
def _set_item_content(model: TwoTower, catalogue_text: torch.Tensor, known_rows: np.ndarray) -> None:
    """Fill the user tower's fixed per-item content table: known items' text vectors, PCA-compressed."""
    texts = catalogue_text.cpu().numpy()
    has_text = np.abs(texts).sum(axis=1) > 0
    mean, projection = fit_text_content(texts[has_text] if has_text.any() else texts)
    content = np.where(has_text[:, None], (texts - mean) @ projection, 0.0).astype(np.float32)
    model.user_tower.item_content[1:] = torch.from_numpy(content[known_rows]).to(catalogue_text.device)


def _run_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    examples: TrainingExamples,
    features: FeatureSpace,
    runtime: Runtime,
    hp: Hyperparameters,
    epoch_seed: int,
) -> float:
    """One pass over the training users; every rank draws the same permutation and takes its slice of each batch."""
    model.train()
    generator = torch.Generator().manual_seed(epoch_seed)
    order = torch.randperm(len(examples), generator=generator).to(runtime.device)
    n_batches = -(-len(examples) // hp.batch_size)
    sampling = torch.Generator(device=runtime.device).manual_seed(epoch_seed + runtime.rank)
    total = 0.0
    for b in range(n_batches):
        rows = rank_share(order[b * hp.batch_size : (b + 1) * hp.batch_size], runtime)
        users, items, targets = examples.batch(rows, features, hp, sampling)
        user_vectors, item_vectors = model(users, items)
        loss = full_softmax_loss(user_vectors, item_vectors, targets, hp.temperature)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / n_batches


def _validation_metrics(
    model: TwoTower,
    features: FeatureSpace,
    data: Dataset,
    parts: Split,
    valid_set: evaluate.EvalSet,
    item_features: dict[str, torch.Tensor],
) -> dict[str, float]:
    """Validation metrics at 10 over the whole catalogue, users encoded from their training history."""
    with torch.no_grad():
        model.eval()
        item_vectors = model.item_tower(**item_features).cpu().numpy()
        history = recent_positive_items(parts.train)
        users = data.users.iloc[valid_set.user_rows]
        device = next(model.parameters()).device
        user_features = to_device(
            features.encode_users(users, [history.get(u, []) for u in users[schema.USER_ID]]), device
        )
        user_vectors = model.user_tower(**user_features).cpu().numpy()
    return evaluate.rank_metrics(user_vectors @ item_vectors.T, valid_set.heldout, valid_set.exclude, ks=(10,))


def _evaluate_and_save(
    result: FitResult,
    data: Dataset,
    data_dir: Path,
    out_dir: Path,
    split: str,
    hp: Hyperparameters,
    world_size: int,
    text_cache: Path | None,
) -> None:
    trained = TrainedModel(
        model_version="",
        config={},
        features=result.features,
        user_tower=result.model.user_tower,
        item_tower=result.model.item_tower,
        recent_items={},
    )

    def user_scores(users: pd.DataFrame, items: pd.DataFrame, history: pd.DataFrame) -> np.ndarray:
        return trained.encode_users(users, history) @ trained.encode_items(items, text_cache).T

    served = evaluate.ServedModel(user_scores, trained.item_ids, evaluate.FIT_RERANKER)
    metrics, reranker = evaluate.evaluate_served_model(data_dir, served, split, seed=hp.seed)
    config = model_config(
        hp,
        split=split,
        world_size=world_size,
        best_epoch=result.best_epoch,
        inputs_off=result.inputs_off,
        **{f"valid_{GATE_METRIC}": result.best_valid},
    )
    save_model(
        out_dir,
        config=config,
        features=result.features,
        user_tower=result.model.user_tower,
        item_tower=result.model.item_tower,
        recent_items=recent_positive_items(data.interactions),
        metrics=metrics,
        reranker=reranker,
    )
