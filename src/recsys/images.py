"""Product images with Stable Diffusion (diffusers): one seeded PNG per item, batched and resumable.

Each item gets `<item_id>.png` in the output folder and its row in the items parquet gets `img_link` pointing at
it, so Feast's item features carry the image. Images that already exist are skipped, so an interrupted run simply
resumes. Every item draws its starting noise from its own generator seeded by (seed, item_id), so an item's image
does not depend on which other items share its batch, nor on the process or the machine that renders it.

torch, pandas and diffusers are imported inside the functions that need them so that the CLI stays fast to start.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from recsys import schema
from recsys.contract import DEFAULT_IMAGE_MODEL

if TYPE_CHECKING:
    import pandas as pd
    import torch
    from diffusers import StableDiffusionPipeline

DEVICES = ("auto", "cpu", "cuda")
DEFAULT_STEPS = 25
DEFAULT_GUIDANCE = 7.5
DEFAULT_SIZE = 512  # SD v1.5's training resolution
DEFAULT_BATCH_SIZE = 4
DEFAULT_SEED = 42
STYLE_SUFFIX = "studio product photo, white background, soft even lighting, centered, high detail, sharp focus"
NEGATIVE_PROMPT = (
    "blurry, low quality, lowres, text, watermark, logo, people, hands, cluttered background, deformed, cropped"
)
# CLIP reads 77 tokens: a short description keeps the style suffix inside them
DESCRIPTION_MAX_WORDS = 20
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_UNSAFE_CHAR = re.compile(r"[^A-Za-z0-9._-]")


class ImageError(ValueError):
    """Bad input, an unknown device or unreachable weights: nothing was generated."""


@dataclass(frozen=True)
class ImageReport:
    """What a run did; `seconds` is the time spent generating (model loading excluded)."""

    generated: int
    skipped: int
    out_dir: Path
    seconds: float


def resolve_device(device: str) -> tuple[str, torch.dtype]:
    """`auto` -> CUDA in fp16 when available, else CPU in fp32; `cuda` without a GPU is an error."""
    import torch

    if device not in DEVICES:
        raise ImageError(f"unknown device {device!r}: use one of {', '.join(DEVICES)}")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ImageError("device 'cuda' asked for but torch sees no CUDA GPU: use --device cpu or auto")
    return device, torch.float16 if device == "cuda" else torch.float32


def item_prompt(product_name: str, category: str = "", about_product: str = "") -> str:
    """Name, leaf category and the start of the description, then the style suffix."""
    leaf = category.split(schema.CATEGORY_SEPARATOR)[-1].strip()
    first_sentence = about_product.strip().split(". ")[0]
    description = " ".join(first_sentence.split()[:DESCRIPTION_MAX_WORDS]).rstrip(".,;:")
    parts = [product_name.strip(), leaf, description, STYLE_SUFFIX]
    return ", ".join(part for part in parts if part)


def item_seed(seed: int, item_id: str) -> int:
    """A 63-bit seed from (seed, item_id), the same in every process (Python's hash() is salted per process)."""
    digest = hashlib.blake2b(f"{seed}\x00{item_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & (2**63 - 1)


def image_file_name(item_id: str) -> str:
    """`<item_id>.png`; an id with unsafe characters is cleaned and suffixed with its hash to stay unique."""
    if _SAFE_NAME.fullmatch(item_id) and len(item_id) <= 200:
        return f"{item_id}.png"
    cleaned = _UNSAFE_CHAR.sub("_", item_id)[:100].lstrip(".")
    digest = hashlib.blake2b(item_id.encode(), digest_size=4).hexdigest()
    return f"{cleaned}-{digest}.png"


def load_pipeline(model: str, device: str, dtype: torch.dtype) -> StableDiffusionPipeline:
    """Load a Stable Diffusion pipeline from a Hub id (local cache / network) or a local diffusers folder."""
    from diffusers import StableDiffusionPipeline

    local = Path(model).expanduser()
    # a Hub id is `name` or `owner/name`; anything else is meant as a folder
    looks_local = local.exists() or model.startswith((".", "~", "/")) or model.count("/") > 1 or "\\" in model
    if looks_local and not (local / "model_index.json").is_file():
        raise ImageError(
            f"model folder {model!r} is not a diffusers Stable Diffusion folder (no model_index.json): "
            f"{_how_to_provide(DEFAULT_IMAGE_MODEL)}"
        )
    source = str(local) if looks_local else model
    try:
        pipeline = StableDiffusionPipeline.from_pretrained(
            source,
            dtype=dtype,
            # product photos: the NSFW checker costs a 1.2 GB model and blacks out false positives
            safety_checker=None,
            requires_safety_checker=False,
            low_cpu_mem_usage=importlib.util.find_spec("accelerate") is not None,
        )
    except (OSError, ValueError) as exc:  # hub errors are OSError; a malformed id or folder is a ValueError
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__  # whole, never cut
        raise ImageError(
            f"cannot load Stable Diffusion weights {model!r} ({reason}): {_how_to_provide(model)}"
        ) from exc
    return pipeline.to(device)


def generate_images(
    items_path: Path,
    out_dir: Path,
    model: str = DEFAULT_IMAGE_MODEL,
    device: str = "auto",
    steps: int = DEFAULT_STEPS,
    guidance: float = DEFAULT_GUIDANCE,
    size: int = DEFAULT_SIZE,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    seed: int = DEFAULT_SEED,
    pipeline: StableDiffusionPipeline | None = None,
) -> ImageReport:
    """Render one PNG per item (the first `limit` items) into `out_dir` and point the items' img_link at them.

    Existing images are kept (resume). `pipeline`, when given, is used instead of loading `model` (tests pass a
    tiny one). Raises ImageError on bad input, an unknown device or unreachable weights, before writing anything.
    """
    _check_numbers(steps=steps, guidance=guidance, size=size, limit=limit, batch_size=batch_size)
    device_name, dtype = resolve_device(device)
    items = _read_items(items_path)
    chosen = items.assign(**{schema.ITEM_ID: items[schema.ITEM_ID].astype(str)}).drop_duplicates(schema.ITEM_ID)
    chosen = chosen.head(limit) if limit else chosen
    paths = {item_id: out_dir / image_file_name(item_id) for item_id in chosen[schema.ITEM_ID]}
    todo = chosen[[not paths[item_id].exists() for item_id in chosen[schema.ITEM_ID]]]

    seconds = 0.0
    if len(todo):
        pipe = pipeline.to(device_name) if pipeline is not None else load_pipeline(model, device_name, dtype)
        pipe.set_progress_bar_config(disable=True)  # our own bar counts images, not denoising steps
        out_dir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        _render(pipe, todo, paths, steps=steps, guidance=guidance, size=size, batch_size=batch_size, seed=seed)
        seconds = time.perf_counter() - started
    _write_img_links(items_path, items, out_dir)
    return ImageReport(generated=len(todo), skipped=len(chosen) - len(todo), out_dir=out_dir, seconds=seconds)


def _render(
    pipe: StableDiffusionPipeline,
    todo: pd.DataFrame,
    paths: dict[str, Path],
    *,
    steps: int,
    guidance: float,
    size: int,
    batch_size: int,
    seed: int,
) -> None:
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    rows = list(todo.itertuples(index=False))
    columns = (TextColumn("images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True)) as progress:
        bar = progress.add_task("images", total=len(rows))
        for batch in _batches(rows, batch_size):
            item_ids = [str(getattr(row, schema.ITEM_ID)) for row in batch]
            result = pipe(
                prompt=[_row_prompt(row) for row in batch],
                negative_prompt=[NEGATIVE_PROMPT] * len(batch),
                num_inference_steps=steps,
                guidance_scale=guidance,
                height=size,
                width=size,
                # CPU generators: the starting noise is the same on CPU and GPU
                generator=[torch.Generator("cpu").manual_seed(item_seed(seed, item_id)) for item_id in item_ids],
                output_type="pil",
            )
            for item_id, image in zip(item_ids, result.images, strict=True):
                _save_png(image, paths[item_id])
            progress.advance(bar, len(batch))


def _row_prompt(row: Any) -> str:
    def text(column: str) -> str:
        value = getattr(row, column, None)
        return value if isinstance(value, str) else ""

    return item_prompt(text(schema.PRODUCT_NAME), text(schema.CATEGORY), text(schema.ABOUT_PRODUCT))


def _batches(rows: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(rows), size):
        yield rows[start : start + size]


def _save_png(image: Any, path: Path) -> None:
    """Write then rename, so an interrupted run never leaves a half-written image that a resume would skip."""
    partial = path.with_name(f".{path.name}.partial")
    image.save(partial, format="PNG")
    os.replace(partial, path)


def _read_items(items_path: Path) -> pd.DataFrame:
    import pandas as pd

    if not items_path.is_file():
        raise ImageError(f"items file {str(items_path)!r} does not exist (run `recsys generate` first)")
    try:
        items = pd.read_parquet(items_path)
    except Exception as exc:  # pyarrow raises several unrelated types for a file that is not parquet
        raise ImageError(f"items file {str(items_path)!r} is not a readable parquet file: {exc}") from exc
    missing = [c for c in (schema.ITEM_ID, schema.PRODUCT_NAME) if c not in items.columns]
    if missing:
        raise ImageError(f"items file {str(items_path)!r} lacks column(s) {', '.join(missing)}")
    if items.empty:
        raise ImageError(f"items file {str(items_path)!r} has no items")
    if items[schema.ITEM_ID].isna().any() or (items[schema.ITEM_ID].astype(str).str.strip() == "").any():
        raise ImageError(f"items file {str(items_path)!r} has empty {schema.ITEM_ID} values")
    return items


def _write_img_links(items_path: Path, items: pd.DataFrame, out_dir: Path) -> None:
    """Point img_link at every item's image that exists; other rows, columns and dtypes stay as they were."""
    import pandas as pd

    on_disk = [out_dir.resolve() / image_file_name(str(item_id)) for item_id in items[schema.ITEM_ID]]
    links = pd.Series([str(path) if path.is_file() else pd.NA for path in on_disk], index=items.index, dtype="string")
    current = (
        items[schema.IMG_LINK].astype("string")
        if schema.IMG_LINK in items.columns
        else pd.Series(pd.NA, index=items.index, dtype="string")
    )
    updated = links.fillna(current).astype(schema.ITEM_DTYPES[schema.IMG_LINK])
    if schema.IMG_LINK in items.columns and updated.equals(items[schema.IMG_LINK]):
        return
    partial = items_path.with_name(f".{items_path.name}.partial")
    items.assign(**{schema.IMG_LINK: updated}).to_parquet(partial)
    os.replace(partial, items_path)


def _check_numbers(*, steps: int, guidance: float, size: int, limit: int | None, batch_size: int) -> None:
    if steps < 1:
        raise ImageError(f"steps must be >= 1, got {steps}")
    if guidance < 0:
        raise ImageError(f"guidance must be >= 0, got {guidance}")
    if size < 64 or size % 8:
        raise ImageError(f"size must be a multiple of 8 and >= 64, got {size}")
    if limit is not None and limit < 1:
        raise ImageError(f"limit must be >= 1, got {limit}")
    if batch_size < 1:
        raise ImageError(f"batch size must be >= 1, got {batch_size}")


def _how_to_provide(model: str) -> str:
    return (
        "weights cannot be downloaded here (offline or no network). On a machine with access run "
        f"`hf download {model} --local-dir DIR`, copy DIR here "
        "and pass --model DIR (or fill the Hugging Face cache and unset HF_HUB_OFFLINE)"
    )
