"""The two towers. nn.Modules only: feature encoding lives in inputs.py, training in train.py.

Index 0 of every id / token table is the out-of-vocabulary (or padding) slot, so unknown users, items and
categories still get a vector; training drops ids to 0 at random so that slot learns a sensible average.
Id tables start small (std ID_INIT_STD): the cosine scores then start near 0 and the softmax near uniform.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from recsys import schema

ID_INIT_STD = 0.05


def _mlp(in_dim: int, hidden: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, out_dim))


def _sqrt_pooling_weights(ids: torch.Tensor) -> torch.Tensor:
    """Per-slot weights that turn a sum over the non-padding ids into sum / sqrt(count): a long history weighs
    more than a short one, but less than linearly (YouTube DNN's and Mult-DAE's normalised inputs)."""
    present = (ids > 0).float()
    return present / present.sum(dim=1, keepdim=True).clamp(min=1.0).sqrt()


def _small_init(*tables: nn.Embedding | nn.EmbeddingBag) -> None:
    for table in tables:
        nn.init.normal_(table.weight, std=ID_INIT_STD)
        if table.padding_idx is not None:
            with torch.no_grad():
                table.weight[table.padding_idx].zero_()


class UserTower(nn.Module):
    """User id, gender, age bucket, preferred categories (bag), recent items (ids summed / sqrt(count), their
    categories and text content, mean relative price) -> MLP -> unit vector.

    `item_content` is a fixed per-item table (each known item's text vector, compressed to its leading
    principal components; set once by training and saved with the weights), so a user's history reads as
    "what they looked at", not only ids.
    """

    def __init__(
        self,
        n_users: int,
        n_genders: int,
        n_age_buckets: int,
        n_preferences: int,
        n_items: int,
        n_category_tokens: int,
        content_dim: int = 0,
        id_dim: int = 64,
        side_dim: int = 16,
        hidden: int = 256,
        out_dim: int = schema.EMBEDDING_DIM,
    ) -> None:
        super().__init__()
        self.user = nn.Embedding(n_users + 1, id_dim)
        self.gender = nn.Embedding(n_genders + 1, side_dim)
        self.age = nn.Embedding(n_age_buckets + 1, side_dim)
        self.preferences = nn.EmbeddingBag(n_preferences + 1, id_dim, mode="mean", padding_idx=0)
        self.history = nn.EmbeddingBag(n_items + 1, id_dim, mode="sum", padding_idx=0)
        self.history_categories = nn.EmbeddingBag(n_category_tokens + 1, id_dim, mode="mean", padding_idx=0)
        self.history_price = nn.Linear(2, side_dim)  # mean relative price of recent items, log1p(their count)
        self.register_buffer("item_content", torch.zeros(n_items + 1, content_dim))
        self.history_content = nn.Linear(content_dim, id_dim) if content_dim else None
        self.mlp = _mlp((4 + int(content_dim > 0)) * id_dim + 3 * side_dim, hidden, out_dim)
        _small_init(self.user, self.history)

    def forward(
        self,
        user: torch.Tensor,
        gender: torch.Tensor,
        age: torch.Tensor,
        preferences: torch.Tensor,
        history: torch.Tensor,
        history_categories: torch.Tensor,
        history_price: torch.Tensor,
    ) -> torch.Tensor:
        parts = [
            self.user(user),
            self.gender(gender),
            self.age(age),
            self.preferences(preferences),
            self.history(history, per_sample_weights=_sqrt_pooling_weights(history)),
            self.history_categories(history_categories),
            self.history_price(history_price),
        ]
        if self.history_content is not None:
            present = (history > 0).unsqueeze(-1).float()
            pooled = (self.item_content[history] * present).sum(1) / present.sum(1).clamp(min=1.0)
            parts.append(self.history_content(pooled))
        return F.normalize(self.mlp(torch.cat(parts, dim=1)), dim=1)


class ItemTower(nn.Module):
    """Item id + category path tokens + normalised numerics + the projected MiniLM text vector, summed in the
    output space -> unit vector. Linear on purpose: on MovieLens an MLP here overfits the item side (measured)."""

    def __init__(
        self,
        n_items: int,
        n_category_tokens: int,
        n_numerics: int,
        text_dim: int,
        out_dim: int = schema.EMBEDDING_DIM,
    ) -> None:
        super().__init__()
        self.item = nn.Embedding(n_items + 1, out_dim)
        self.category = nn.Embedding(n_category_tokens + 1, out_dim, padding_idx=0)
        self.numerics = nn.Linear(n_numerics, out_dim) if n_numerics else None
        self.text = nn.Linear(text_dim, out_dim) if text_dim else None
        _small_init(self.item, self.category)

    def forward(
        self, item: torch.Tensor, category: torch.Tensor, numerics: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        vector = self.item(item) + self.category(category).sum(1)
        if self.numerics is not None:
            vector = vector + self.numerics(numerics)
        if self.text is not None:
            vector = vector + self.text(text)
        return F.normalize(vector, dim=1)


class TwoTower(nn.Module):
    """Both towers under one module, so DistributedDataParallel syncs them in one call."""

    def __init__(self, user_tower: UserTower, item_tower: ItemTower) -> None:
        super().__init__()
        self.user_tower = user_tower
        self.item_tower = item_tower

    def forward(
        self, users: dict[str, torch.Tensor], items: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.user_tower(**users), self.item_tower(**items)
