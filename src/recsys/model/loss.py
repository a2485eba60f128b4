"""The training objective of the two towers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
