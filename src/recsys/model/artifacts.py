"""The model dir: towers as state dicts, JSON config and mappings, a content-hash model_version, metrics.

Files: config.json, user_tower.pt, item_tower.pt, mappings.json (feature space + each known user's recent
items), model_version (text), metrics.json, and the rerank stage's reranker.npz + reranker.json (recsys.model.rerank;
absent in models trained without it). Loading uses torch.load(weights_only=True): no pickled code runs.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from recsys import schema
from recsys.model.inputs import MAX_HISTORY, FeatureSpace, recent_positive_items
from recsys.model.rerank import UNKNOWN, ItemItemReranker, RerankerError
from recsys.model.towers import ItemTower, UserTower

CONFIG_FILE = "config.json"
USER_TOWER_FILE = "user_tower.pt"
ITEM_TOWER_FILE = "item_tower.pt"
MAPPINGS_FILE = "mappings.json"
MODEL_VERSION_FILE = "model_version"
METRICS_FILE = "metrics.json"
MODEL_FILES = (CONFIG_FILE, USER_TOWER_FILE, ITEM_TOWER_FILE, MAPPINGS_FILE, MODEL_VERSION_FILE)
ENCODE_BATCH = 8192  # rows per tower forward when encoding whole catalogues


class ModelDirError(ValueError):
    """The model dir is missing, incomplete or inconsistent."""


def _canonical_json(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":")).encode("utf-8")


def content_hash(
    config: dict[str, Any],
    mappings: dict[str, Any],
    towers: Sequence[torch.nn.Module],
    reranker: ItemItemReranker | None = None,
) -> str:
    """sha256 (first 16 hex digits) of the config, the mappings, every weight and the reranker, in a fixed order."""
    digest = hashlib.sha256(_canonical_json(config) + _canonical_json(mappings))
    for tower in towers:
        for name, tensor in sorted(tower.state_dict().items()):
            digest.update(name.encode("utf-8"))
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    if reranker is not None:
        weights = reranker.weights
        weights.sort_indices()
        digest.update(_canonical_json(reranker.config()))
        for array in (weights.indptr, weights.indices, weights.data):
            digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:16]


@dataclass
class TrainedModel:
    """A loaded model: encodes users and items (known or not) into L2-normalised EMBEDDING_DIM vectors."""

    model_version: str
    config: dict[str, Any]
    features: FeatureSpace
    user_tower: UserTower
    item_tower: ItemTower
    recent_items: dict[str, list[str]]  # known users' latest positive items, oldest first
    reranker: ItemItemReranker | None = None  # the served rerank stage over item_ids' positions, if trained

    @property
    def item_ids(self) -> list[str]:
        """Items with a learned id embedding (any other item id encodes through the OOV slot)."""
        return self.features.item_ids

    def item_positions(self, item_ids: Sequence[str]) -> np.ndarray:
        """Positions of these ids in item_ids (what the reranker takes); rerank.UNKNOWN (-1) for unknown ids."""
        index = self.features.item_index  # 1-based, 0 is the OOV slot
        return np.array([index[str(item)] - 1 if str(item) in index else UNKNOWN for item in item_ids], np.int64)

    @property
    def user_ids(self) -> list[str]:
        """Users with a learned id embedding."""
        return self.features.user_ids

    @torch.no_grad()
    def encode_items(self, items: pd.DataFrame, text_cache: Path | None = None) -> np.ndarray:
        """[len(items), EMBEDDING_DIM] float32 unit vectors from whatever item columns the frame carries."""
        self.item_tower.eval()
        out = np.zeros((len(items), schema.EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(items), ENCODE_BATCH):
            chunk = items.iloc[start : start + ENCODE_BATCH]
            out[start : start + len(chunk)] = self.item_tower(**self.features.encode_items(chunk, text_cache)).numpy()
        return out

    @torch.no_grad()
    def encode_users(
        self, users: pd.DataFrame, history: Mapping[str, Sequence[str]] | pd.DataFrame | None = None
    ) -> np.ndarray:
        """[len(users), EMBEDDING_DIM] float32 unit vectors.

        `users` needs user_id (None for a profile-only, cold-start row) and any of age, gender, preferences.
        `history`: user_id -> recent item ids (oldest first), or an interactions frame to take them from; when
        given it is the whole truth (users it lacks have no history). None -> the latest items seen in training.
        Unknown users without history are encoded from their features alone.
        """
        if isinstance(history, pd.DataFrame):
            history = recent_positive_items(history)
        known = self.recent_items if history is None else history
        ids = users[schema.USER_ID].tolist() if schema.USER_ID in users.columns else [None] * len(users)
        histories = [
            [] if user_id is None or user_id is pd.NA else list(known.get(str(user_id), []))[-MAX_HISTORY:]
            for user_id in ids
        ]
        self.user_tower.eval()
        out = np.zeros((len(users), schema.EMBEDDING_DIM), dtype=np.float32)
        for start in range(0, len(users), ENCODE_BATCH):
            chunk = users.iloc[start : start + ENCODE_BATCH]
            feats = self.features.encode_users(chunk, histories[start : start + len(chunk)])
            out[start : start + len(chunk)] = self.user_tower(**feats).numpy()
        return out


def save_model(
    out_dir: Path,
    *,
    config: dict[str, Any],
    features: FeatureSpace,
    user_tower: UserTower,
    item_tower: ItemTower,
    recent_items: dict[str, list[str]],
    metrics: dict[str, Any] | None = None,
    reranker: ItemItemReranker | None = None,
) -> str:
    """Write the model dir all at once (built in a sibling temp dir, then renamed); returns model_version.

    reranker: the rerank stage over features.item_ids' positions (None: the model serves the towers alone)."""
    if reranker is not None and reranker.n_items != len(features.item_ids):
        raise ModelDirError(f"the reranker covers {reranker.n_items} items, the model {len(features.item_ids)}")
    mappings = {"features": features.to_dict(), "recent_items": recent_items}
    version = content_hash(config, mappings, (user_tower, item_tower), reranker)
    out_dir = Path(out_dir)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        (staging / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True))
        (staging / MAPPINGS_FILE).write_bytes(_canonical_json(mappings))
        torch.save(user_tower.state_dict(), staging / USER_TOWER_FILE)
        torch.save(item_tower.state_dict(), staging / ITEM_TOWER_FILE)
        if reranker is not None:
            reranker.save(staging)
        (staging / MODEL_VERSION_FILE).write_text(version + "\n")
        if metrics is not None:
            (staging / METRICS_FILE).write_text(json.dumps(metrics, indent=2))
        if out_dir.exists():
            shutil.rmtree(out_dir)
        staging.rename(out_dir)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return version


def load_model(model_dir: Path) -> TrainedModel:
    """Load a model dir written by train; raises ModelDirError when files are missing or do not match."""
    model_dir = Path(model_dir)
    missing = [name for name in MODEL_FILES if not (model_dir / name).is_file()]
    if missing:
        raise ModelDirError(f"{model_dir} is not a model dir: missing {', '.join(missing)}")
    config = json.loads((model_dir / CONFIG_FILE).read_text())
    mappings = json.loads((model_dir / MAPPINGS_FILE).read_text())
    features = FeatureSpace.from_dict(mappings["features"])
    user_tower = UserTower(**features.user_tower_sizes(), **config["user_tower"])
    item_tower = ItemTower(**features.item_tower_sizes(), **config["item_tower"])
    user_tower.load_state_dict(torch.load(model_dir / USER_TOWER_FILE, weights_only=True, map_location="cpu"))
    item_tower.load_state_dict(torch.load(model_dir / ITEM_TOWER_FILE, weights_only=True, map_location="cpu"))
    version = (model_dir / MODEL_VERSION_FILE).read_text().strip()
    try:
        reranker = ItemItemReranker.load(model_dir)
    except (RerankerError, OSError, ValueError, KeyError) as exc:
        raise ModelDirError(f"{model_dir}: unreadable reranker: {exc}") from exc
    if reranker is not None and reranker.n_items != len(features.item_ids):
        raise ModelDirError(
            f"{model_dir}: the reranker covers {reranker.n_items} items, the model {len(features.item_ids)}"
        )
    if content_hash(config, mappings, (user_tower, item_tower), reranker) != version:
        raise ModelDirError(f"{model_dir}: model_version {version} does not match the files' content")
    return TrainedModel(
        model_version=version,
        config=config,
        features=features,
        user_tower=user_tower.eval(),
        item_tower=item_tower.eval(),
        recent_items=mappings["recent_items"],
        reranker=reranker,
    )
