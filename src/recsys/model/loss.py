"""The training objective of the two towers."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def full_softmax_loss(
    user_vectors: torch.Tensor, item_vectors: torch.Tensor, targets: torch.Tensor, temperature: float
) -> torch.Tensor:
    """Multinomial log-likelihood of each user's positives under a softmax over the whole catalogue.

    user_vectors [B, D], item_vectors [n_items, D], targets [B, n_items]: each user's positive weights (0 for the
    rest). Every positive counts with its weight, so a user with many positives weighs more (as in EASE's
    squared loss); no sampled negatives, hence no sampling bias to correct.
    """
    log_probs = F.log_softmax(user_vectors @ item_vectors.T / temperature, dim=1)
    return -(targets * log_probs).sum() / targets.sum().clamp(min=1e-12)
