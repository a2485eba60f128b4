"""`recsys generate` (synthetic users, items, interactions) and `recsys images` (Stable Diffusion product photos)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.output import console, fail, setting_default
from recsys.cli.tables import generation_table
from recsys.config import get_settings
from recsys.contract import (
    DEFAULT_IMAGE_MODEL,
    DEFAULT_N_INTERACTIONS,
    DEFAULT_N_ITEMS,
    DEFAULT_N_USERS,
    DEFAULT_PREFERENCE_STRENGTH,
)
from recsys.images import DEFAULT_BATCH_SIZE, DEFAULT_GUIDANCE, DEFAULT_SEED, DEFAULT_SIZE, DEFAULT_STEPS

commands = typer.Typer()


@commands.command("generate")
def generate_cmd(
    n_users: Annotated[int, typer.Option(help="number of users")] = DEFAULT_N_USERS,
    n_items: Annotated[int, typer.Option(help="number of items")] = DEFAULT_N_ITEMS,
    n_interactions: Annotated[int, typer.Option(help="number of interactions")] = DEFAULT_N_INTERACTIONS,
    seed: Annotated[int, typer.Option(help="random seed: the same seed gives identical files")] = 42,
    out: Annotated[Path | None, typer.Option(help=f"output folder {setting_default('data_dir')}")] = None,
    preference_strength: Annotated[
        float | None,
        typer.Option(
            help="share of fresh picks that follow the user's declared categories, 0..1 (0 = none: latent tastes, "
            f"co-purchases and popularity only) [default: {DEFAULT_PREFERENCE_STRENGTH}]"
        ),
    ] = None,
    as_of: Annotated[
        datetime | None,
        typer.Option(
            formats=["%Y-%m-%d"], help="the data's 'now': interactions before it, some arrivals after [default: today]"
        ),
    ] = None,
) -> None:
    """Write synthetic users, items and interactions (parquet) and print the planted signal."""
    from recsys.data.generate import GenerationError, generate

    target = out or get_settings().data_dir
    strength = {} if preference_strength is None else {"preference_strength": preference_strength}
    try:
        with console.status("generating") as status:
            report = generate(
                n_users=n_users,
                n_items=n_items,
                n_interactions=n_interactions,
                seed=seed,
                out=target,
                as_of=as_of,
                **strength,
                on_stage=lambda stage: status.update(f"generating: {stage}"),
            )
    except GenerationError as exc:
        fail(str(exc))
    console.print(generation_table(report, target))
    console.print("interaction types: " + ", ".join(f"{k} {v:,}" for k, v in report.type_counts.items()))
    console.print(
        f"planted signal: {report.preferred_share:.3f} of interactions fall in a user's preferred "
        f"categories (uniform choice: {report.uniform_share:.3f})"
    )


@commands.command("images")
def images_cmd(
    items: Annotated[
        Path | None,
        typer.Option(
            help="Items parquet to illustrate; its img_link column is updated.",
            show_default="$RECSYS_DATA_DIR/recommendation_items.parquet",
        ),
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option(help="Folder for the <item_id>.png files.", show_default="$RECSYS_DATA_DIR/images"),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            help="Hugging Face model id (must be in the local HF cache offline) or a local diffusers "
            "folder holding model_index.json."
        ),
    ] = DEFAULT_IMAGE_MODEL,
    device: Annotated[
        str, typer.Option(help="auto (CUDA in fp16 when a GPU is visible, else CPU in fp32), cpu or cuda.")
    ] = "auto",
    steps: Annotated[int, typer.Option(help="Denoising steps per image.")] = DEFAULT_STEPS,
    guidance: Annotated[
        float, typer.Option(help="Classifier-free guidance scale (higher follows the prompt more closely).")
    ] = DEFAULT_GUIDANCE,
    size: Annotated[int, typer.Option(help="Image width and height in pixels (a multiple of 8).")] = DEFAULT_SIZE,
    limit: Annotated[int | None, typer.Option(help="Only the first N items of the file.", show_default="all")] = None,
    batch_size: Annotated[int, typer.Option(help="Images rendered per pipeline call.")] = DEFAULT_BATCH_SIZE,
    seed: Annotated[
        int,
        typer.Option(
            help="Base seed; each item's seed derives from it and the item id, so the "
            "same item and seed give the same image."
        ),
    ] = DEFAULT_SEED,
) -> None:
    """Render a Stable Diffusion product photo per item and point the items' img_link at it (resumable)."""
    from recsys import schema
    from recsys.images import ImageError, generate_images

    settings = get_settings()
    try:
        report = generate_images(
            items_path=items or settings.data_dir / schema.ITEMS_FILE,
            out_dir=out or settings.data_dir / "images",
            model=model,
            device=device,
            steps=steps,
            guidance=guidance,
            size=size,
            limit=limit,
            batch_size=batch_size,
            seed=seed,
        )
    except ImageError as exc:
        fail(str(exc))
    per_image = f", {report.seconds / report.generated:.2f} s/image" if report.generated else ""
    console.print(
        f"{report.generated} images generated, {report.skipped} already there, in {report.out_dir} "
        f"({report.seconds:.1f} s{per_image})"
    )
