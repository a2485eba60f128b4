"""Train the two-tower model: in-batch sampled softmax with temperature and log-Q correction.

`train(data_dir, out_dir)` reads the three parquet files, splits the interactions (evaluate.make_split), trains
on the training part with early stopping on validation Recall@10, writes the model dir and metrics.json
(model vs baselines on the test part). Under torchrun it runs DistributedDataParallel: every rank reads the
same data, takes its slice of each global batch, and rank 0 alone evaluates and writes.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from recsys import schema
from recsys.model import evaluate
from recsys.model.artifacts import TrainedModel, save_model
from recsys.model.features import (
    MAX_HISTORY,
    OOV,
    FeatureSpace,
    fit_feature_space,
    fit_text_content,
    recent_positive_items,
)
from recsys.model.towers import ItemTower, TwoTower, UserTower

EARLY_STOPPING_METRIC = "recall@10"
TOWER_DIMS = {"user_tower": {"id_dim": 64, "side_dim": 16, "hidden": 256}, "item_tower": {"id_dim": 64, "hidden": 256}}


class TrainingDataError(ValueError):
    """The data dir cannot be trained on (missing files or columns, nothing to learn from)."""


@dataclass(frozen=True)
class EpochReport:
    epoch: int
    loss: float
    valid: dict[str, float]
    interactions_per_s: float
    improved: bool


# ----------------------------------------------------------------------------------------------- data
def read_data(data_dir: Path) -> evaluate.Dataset:
    """The three parquet files (evaluate.read_dataset), with bad input turned into TrainingDataError."""
    try:
        data = evaluate.read_dataset(data_dir)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainingDataError(str(exc)) from exc
    if data.interactions.empty:
        raise TrainingDataError(f"{data_dir}: no interaction refers to a known user and item")
    return data


def time_ordered_positives(interactions: pd.DataFrame) -> pd.DataFrame:
    """Rows that count as positives with their weight (`_weight`), time-ordered per user."""
    weighted = interactions.assign(_weight=evaluate.interaction_weights(interactions))
    weighted = weighted[weighted["_weight"] > 0]
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


# ----------------------------------------------------------------------------------------------- runtime
@dataclass(frozen=True)
class Runtime:
    device: torch.device
    rank: int
    world_size: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _start_runtime(device: str) -> Runtime:
    """Single process, or DDP when torchrun set WORLD_SIZE (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if device not in ("auto", "cpu", "cuda"):
        raise TrainingDataError(f"device must be auto, cpu or cuda, got {device!r}")
    if use_cuda and not torch.cuda.is_available():
        raise TrainingDataError("device cuda requested but CUDA is not available")
    chosen = torch.device(f"cuda:{local_rank}" if use_cuda else "cpu")
    if world_size > 1:
        if not use_cuda:
            # the ranks share the CPU cores: oversubscribed threads slow everyone down
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world_size))))
        else:
            torch.cuda.set_device(chosen)
        if not dist.is_initialized():
            dist.init_process_group(backend="nccl" if use_cuda else "gloo")
        return Runtime(chosen, dist.get_rank(), dist.get_world_size())
    return Runtime(chosen, 0, 1)


# ----------------------------------------------------------------------------------------------- training
def _gather(tensors: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
    return {name: tensor[rows] for name, tensor in tensors.items()}


def _drop_ids(ids: torch.Tensor, rate: float, generator: torch.Generator) -> torch.Tensor:
    """Replace ids by the OOV slot at random, so that slot learns to stand for an unseen user / item."""
    if rate <= 0:
        return ids
    drop = torch.rand(ids.shape, generator=generator, device=ids.device) < rate
    return torch.where(drop, torch.zeros_like(ids), ids)


def sampled_softmax_loss(
    user_vectors: torch.Tensor,
    item_vectors: torch.Tensor,
    item_rows: torch.Tensor,
    log_q: torch.Tensor,
    weights: torch.Tensor,
    temperature: float,
) -> torch.Tensor:
    """In-batch softmax: each user's positive against the batch's other positives, weighted per row.

    log_q (log of how often each column's item shows up in a batch) is subtracted so popular items, which are
    negatives more often, are not over-penalised; copies of a row's positive item in other columns are masked
    so they do not count as negatives.
    """
    logits = user_vectors @ item_vectors.T / temperature - log_q[None, :]
    same_item = item_rows[:, None] == item_rows[None, :]
    same_item.fill_diagonal_(False)
    logits = logits.masked_fill(same_item, float("-inf"))
    labels = torch.arange(len(user_vectors), device=logits.device)
    losses = F.cross_entropy(logits, labels, reduction="none")
    return (losses * weights).sum() / weights.sum()


class _Examples:
    """The training positives as device tensors, plus the user / item feature tables they index into."""

    def __init__(
        self,
        features: FeatureSpace,
        data: evaluate.Dataset,
        positives: pd.DataFrame,
        device: torch.device,
        text_cache: Path | None,
    ) -> None:
        vocab_users = pd.DataFrame({schema.USER_ID: [None, *features.user_ids]})
        user_table = vocab_users.merge(data.users, on=schema.USER_ID, how="left") if len(data.users) else vocab_users
        # row r of user_features is vocabulary user r (row 0: OOV); history is per example, not per user
        self.user_features = _to(features.encode_users(user_table), device)
        self.item_features = _to(features.encode_items(data.items, text_cache), device)
        item_rows = pd.Index(data.items[schema.ITEM_ID]).get_indexer(positives[schema.ITEM_ID])
        user_rows = features.user_indices(positives[schema.USER_ID].tolist())
        self.user_rows = torch.from_numpy(user_rows).to(device)
        self.item_rows = torch.from_numpy(item_rows.astype(np.int64)).to(device)
        self.weights = torch.from_numpy(positives["_weight"].to_numpy(dtype=np.float32)).to(device)
        item_ids = features.item_indices(positives[schema.ITEM_ID].tolist())
        history = features.history_features(torch.from_numpy(causal_history(user_rows, item_ids)))
        self.history = _to(history, device)
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


def _to(tensors: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {name: tensor.to(device) for name, tensor in tensors.items()}


def _run_epoch(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    examples: _Examples,
    runtime: Runtime,
    hp: Hyperparameters,
    epoch_seed: int,
) -> float:
    """One pass over the positives; every rank draws the same permutation and takes its slice of each batch."""
    model.train()
    generator = torch.Generator().manual_seed(epoch_seed)
    order = torch.randperm(len(examples), generator=generator).to(runtime.device)
    n_batches = max(1, len(examples) // hp.batch_size)  # a short tail batch would give few negatives: dropped
    sampling = torch.Generator(device=runtime.device).manual_seed(epoch_seed + runtime.rank)
    total = 0.0
    for b in range(n_batches):
        rows = order[b * hp.batch_size : (b + 1) * hp.batch_size][runtime.rank :: runtime.world_size]
        users, items = examples.batch(rows, hp.id_dropout, sampling)
        user_vectors, item_vectors = model(users, items)
        item_rows = examples.item_rows[rows]
        log_q = hp.logq_weight * examples.log_q[item_rows]
        loss = sampled_softmax_loss(
            user_vectors, item_vectors, item_rows, log_q, examples.weights[rows], hp.temperature
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        total += float(loss.detach())
    return total / n_batches


def _validation_metrics(
    model: TwoTower,
    features: FeatureSpace,
    data: evaluate.Dataset,
    parts: evaluate.Split,
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
        user_features = _to(features.encode_users(users, [history.get(u, []) for u in users[schema.USER_ID]]), device)
        user_vectors = model.user_tower(**user_features).cpu().numpy()
    return evaluate.rank_metrics(user_vectors @ item_vectors.T, valid_set.heldout, valid_set.exclude, ks=(10,))


@dataclass(frozen=True)
class Hyperparameters:
    epochs: int
    batch_size: int
    lr: float
    weight_decay: float
    temperature: float
    logq_weight: float
    id_dropout: float
    patience: int
    seed: int
    id_weight_decay: float


@dataclass
class FitResult:
    model: TwoTower  # the best epoch's weights, on CPU, in eval mode (rank 0; other ranks: last weights)
    features: FeatureSpace
    best_epoch: int
    best_valid: float


ID_TABLES = ("user_tower.user.weight", "user_tower.history.weight", "item_tower.item.weight")


def _optimizer(model: TwoTower, hp: Hyperparameters) -> torch.optim.Optimizer:
    """AdamW; the per-user / per-item id tables get their own, strong decay: with a handful of interactions per
    id they would otherwise memorise the training items instead of what generalises."""
    named = dict(model.named_parameters())
    ids = [named[name] for name in ID_TABLES]
    rest = [p for name, p in named.items() if name not in ID_TABLES]
    groups = [{"params": rest, "weight_decay": hp.weight_decay}, {"params": ids, "weight_decay": hp.id_weight_decay}]
    return torch.optim.AdamW(groups, lr=hp.lr)


@torch.no_grad()
def _set_item_content(model: TwoTower, catalogue_text: torch.Tensor, known_rows: np.ndarray) -> None:
    """Fill the user tower's fixed per-item content table: known items' text vectors, PCA-compressed."""
    texts = catalogue_text.cpu().numpy()
    has_text = np.abs(texts).sum(axis=1) > 0
    mean, projection = fit_text_content(texts[has_text] if has_text.any() else texts)
    content = np.where(has_text[:, None], (texts - mean) @ projection, 0.0).astype(np.float32)
    model.user_tower.item_content[1:] = torch.from_numpy(content[known_rows]).to(catalogue_text.device)


def fit(
    data: evaluate.Dataset,
    parts: evaluate.Split,
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
    examples = _Examples(features, data, positives, runtime.device, text_cache)
    model = TwoTower(
        UserTower(**features.user_tower_sizes(), **TOWER_DIMS["user_tower"]),
        ItemTower(**features.item_tower_sizes(), **TOWER_DIMS["item_tower"]),
    ).to(runtime.device)
    if features.use_text:
        _set_item_content(model, examples.item_features["text"], item_index.get_indexer(features.item_ids))
    optimizer = _optimizer(model, hp)
    wrapped = DistributedDataParallel(model) if runtime.world_size > 1 else model

    best_state, best_valid, best_epoch, stale = copy.deepcopy(model.state_dict()), -1.0, 0, 0
    for epoch in range(1, hp.epochs + 1):
        started = time.perf_counter()
        loss = _run_epoch(wrapped, optimizer, examples, runtime, hp, epoch_seed=hp.seed * 1000 + epoch)
        seconds = time.perf_counter() - started
        improved = False
        if runtime.is_main:
            valid = (
                _validation_metrics(model, features, data, parts, valid_set, examples.item_features)
                if len(valid_set.user_rows)
                else {EARLY_STOPPING_METRIC: 0.0}
            )
            improved = valid[EARLY_STOPPING_METRIC] > best_valid
            if improved:
                best_state, best_valid, best_epoch = (
                    copy.deepcopy(model.state_dict()),
                    valid[EARLY_STOPPING_METRIC],
                    epoch,
                )
            if on_epoch is not None:
                on_epoch(EpochReport(epoch, loss, valid, len(examples) / seconds, improved))
        stale = 0 if improved else stale + 1
        if _agree_to_stop(stale >= hp.patience, runtime):
            break
    if runtime.is_main:
        model.load_state_dict(best_state)
    return FitResult(model.cpu().eval(), features, best_epoch, best_valid)


def train(
    data_dir: Path,
    out_dir: Path,
    *,
    split: str = "temporal",
    epochs: int = 20,
    seed: int = 42,
    batch_size: int = 256,
    lr: float = 1e-3,
    weight_decay: float = 1e-5,
    id_weight_decay: float = 10.0,
    temperature: float = 0.1,
    logq_weight: float = 1.0,
    id_dropout: float = 0.5,
    patience: int = 3,
    device: str = "auto",
    text_cache: Path | None = None,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> Path:
    """Train on `data_dir`'s parquet files and write the model dir `out_dir` (returned).

    split: "temporal" (each user's latest interactions held out) or "random"; the model trains on the training
    part, stops early when validation Recall@10 has not improved for `patience` epochs, keeps its best epoch
    and is scored against the baselines on the test part (metrics.json). temperature scales the in-batch
    softmax; logq_weight scales the popularity correction (0 = none); id_dropout is the share of ids replaced
    by the OOV slot during training (cold start); id_weight_decay is the AdamW decay of the user / item id
    tables (weight_decay: of everything else). device: auto (CUDA when available), cpu or cuda. text_cache:
    where MiniLM vectors are cached (default Settings.cache_dir / "text"). `on_epoch` receives an EpochReport
    after every epoch (rank 0 only). Raises TrainingDataError on bad arguments or unusable data; nothing is
    written then.
    """
    if epochs < 1 or batch_size < 2 or temperature <= 0 or patience < 1:
        raise TrainingDataError(
            "epochs and patience must be >= 1, batch_size >= 2 and temperature > 0, got "
            f"{epochs}, {patience}, {batch_size}, {temperature}"
        )
    if split not in evaluate.SPLIT_KINDS:
        raise TrainingDataError(f"split must be one of {', '.join(evaluate.SPLIT_KINDS)}, got {split!r}")
    hp = Hyperparameters(
        epochs, batch_size, lr, weight_decay, temperature, logq_weight, id_dropout, patience, seed, id_weight_decay
    )
    runtime = _start_runtime(device)
    try:
        data = read_data(data_dir)
        parts = evaluate.make_split(data.interactions, split, seed)
        result = fit(data, parts, hp, runtime, text_cache, on_epoch)
        if runtime.is_main:
            _evaluate_and_save(result, data, data_dir, out_dir, split, hp, runtime.world_size, text_cache)
        if runtime.world_size > 1:
            dist.barrier()  # no rank returns before the model dir exists
    finally:
        if runtime.world_size > 1 and dist.is_initialized():
            dist.destroy_process_group()
    return Path(out_dir)


def _evaluate_and_save(
    result: FitResult,
    data: evaluate.Dataset,
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

    metrics = evaluate.evaluate_model_and_baselines(data_dir, None, split, seed=hp.seed, user_scores=user_scores)
    config = {
        **TOWER_DIMS,
        "embedding_dim": schema.EMBEDDING_DIM,
        "training": {
            **asdict(hp),
            "split": split,
            "world_size": world_size,
            "best_epoch": result.best_epoch,
            f"valid_{EARLY_STOPPING_METRIC}": result.best_valid,
        },
    }
    save_model(
        out_dir,
        config=config,
        features=result.features,
        user_tower=result.model.user_tower,
        item_tower=result.model.item_tower,
        recent_items=recent_positive_items(data.interactions),
        metrics=metrics,
    )


def _agree_to_stop(stop: bool, runtime: Runtime) -> bool:
    """Rank 0 decides (it alone validates); every rank must leave the loop at the same epoch."""
    if runtime.world_size == 1:
        return stop
    flag = torch.tensor([1.0 if stop else 0.0], device=runtime.device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())
