"""`recsys train`, `recsys evaluate` and `recsys publish`: the model's life from data to the live version."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from recsys.cli.output import console, fail
from recsys.cli.tables import publish_table, split_metrics_table
from recsys.config import get_settings
from recsys.contract import GATE_METRIC
from recsys.model.config import Hyperparameters

commands = typer.Typer()

DEFAULT_RECIPE = Hyperparameters()
DataDir = Annotated[Path | None, typer.Option(help="parquet folder [default: RECSYS_DATA_DIR]")]
Split = Annotated[str, typer.Option(help="temporal | random")]


@commands.command("train")
def train_cmd(
    data: DataDir = None,
    out: Annotated[Path | None, typer.Option(help="model dir to write [default: RECSYS_MODEL_DIR]")] = None,
    split: Split = "temporal",
    epochs: Annotated[
        int, typer.Option(min=1, help=f"maximum epochs (early stopping on valid {GATE_METRIC})")
    ] = DEFAULT_RECIPE.epochs,
    seed: Annotated[int, typer.Option(help="seed of the split and of training")] = DEFAULT_RECIPE.seed,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Train the two-tower model, evaluate it against popularity, ItemKNN and EASE, write MODEL_DIR."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from recsys.model.artifacts import CONFIG_FILE, METRICS_FILE, MODEL_VERSION_FILE
    from recsys.model.config import TrainingDataError
    from recsys.model.train import EpochReport, train

    settings = get_settings()
    model_dir = out or settings.model_dir
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("training", total=epochs)

        def on_epoch(report: EpochReport) -> None:
            progress.update(
                task,
                completed=report.epoch,
                description=f"epoch {report.epoch}: loss {report.loss:.3f}, "
                f"valid {GATE_METRIC} {report.valid.get(GATE_METRIC, 0.0):.4f}, "
                f"{report.interactions_per_s:,.0f} interactions/s",
            )

        try:
            hp = Hyperparameters(epochs=epochs, seed=seed)
            train(data or settings.data_dir, model_dir, hp, split=split, device=device, on_epoch=on_epoch)
        except (TrainingDataError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports
    result = json.loads((model_dir / METRICS_FILE).read_text())
    console.print(split_metrics_table(split, result, {"two-tower": result["model"]} | result["baselines"]))
    config = json.loads((model_dir / CONFIG_FILE).read_text())["training"]
    version = (model_dir / MODEL_VERSION_FILE).read_text().strip()
    console.print(f"model {version} written to {model_dir} (best epoch {config['best_epoch']})")


@commands.command("evaluate")
def evaluate_cmd(
    data: DataDir = None,
    model: Annotated[Path | None, typer.Option(help="trained model dir [default: RECSYS_MODEL_DIR]")] = None,
    k: Annotated[list[int] | None, typer.Option(help="cut-off, repeatable [default: 10 20 50]")] = None,
    split: Split = "temporal",
    seed: Annotated[int, typer.Option(help="seed of the random split (the one training used)")] = DEFAULT_RECIPE.seed,
    baselines_only: Annotated[bool, typer.Option(help="score only popularity, ItemKNN and EASE")] = False,
    out: Annotated[Path | None, typer.Option(help="also write the metrics JSON here")] = None,
) -> None:
    """Recompute the test-part metrics of the model and of the baselines (popularity, ItemKNN, EASE)."""
    from recsys.model.evaluate import DEFAULT_KS, evaluate_model_and_baselines

    settings = get_settings()
    model_dir = None if baselines_only else (model or settings.model_dir)
    k_values = tuple(k) if k else DEFAULT_KS
    if min(k_values) < 1:
        fail("--k must be >= 1")
    try:
        with console.status(f"evaluating on the {split} split"):
            result = evaluate_model_and_baselines(data or settings.data_dir, model_dir, split, k_values, seed)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    systems = ({"model": result["model"]} if "model" in result else {}) | result["baselines"]
    console.print(split_metrics_table(split, result, systems))
    console.print(f"EASE lambda (chosen on valid): {result['details']['ease_lambda']:g}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        console.print(f"metrics written to {out}")


@commands.command("publish")
def publish_cmd(
    model: Annotated[Path | None, typer.Option(help="trained model dir [default: RECSYS_MODEL_DIR]")] = None,
    data: Annotated[Path | None, typer.Option(help="parquet folder [default: the feature repo's data]")] = None,
    repo: Annotated[Path | None, typer.Option(help="feature repo folder [default: RECSYS_FEATURE_REPO]")] = None,
) -> None:
    """Item vectors -> pgvector + HNSW; item/user/text vectors and top-k per user -> Feast; then go live."""
    from recsys import db, feature_store
    from recsys.publish import publish
    from recsys.vector_index import registry

    try:
        with console.status("publishing: encoding, Feast views, pgvector"):
            report = publish(model or get_settings().model_dir, data_dir=data, repo=repo)
    except (registry.StaleModelVersionError, feature_store.FeatureStoreError, db.DatabaseError) as exc:
        fail(str(exc), code=1)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(publish_table(report))
    console.print("timings: " + ", ".join(f"{k} {v:.2f}" for k, v in report.timings_s.items() if "feast_" not in k))
