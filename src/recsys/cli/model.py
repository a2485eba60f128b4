"""`recsys train`, `recsys evaluate` and `recsys publish`: the model's life from data to the live version."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer

from recsys import schema
from recsys.cli.output import console, fail, setting_default
from recsys.cli.tables import publish_table, ranker_metrics, split_metrics_table
from recsys.config import get_settings
from recsys.contract import GATE_METRIC
from recsys.model.config import Hyperparameters

commands = typer.Typer()

DEFAULT_RECIPE = Hyperparameters()
DataDir = Annotated[Path | None, typer.Option(help=f"parquet folder {setting_default('data_dir')}")]
Split = Annotated[str, typer.Option(help="temporal | random")]


@commands.command("train")
def train_cmd(
    data: DataDir = None,
    out: Annotated[
        Path | None,
        typer.Option(
            help="also write the model dir here [default: only the model store, RECSYS_HOME/models, env RECSYS_MODELS_DIR]"
        ),
    ] = None,
    split: Split = "temporal",
    epochs: Annotated[
        int, typer.Option(min=1, help=f"maximum epochs (early stopping on valid {GATE_METRIC})")
    ] = DEFAULT_RECIPE.epochs,
    seed: Annotated[int, typer.Option(help="seed of the split and of training")] = DEFAULT_RECIPE.seed,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
    events: Annotated[
        bool, typer.Option("--events/--no-events", help="merge the logged user events into --data first")
    ] = True,
) -> None:
    """Train the two-tower model, evaluate it against popularity, ItemKNN and EASE, add it to the model store."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from recsys import model_store
    from recsys.model.artifacts import CONFIG_FILE, METRICS_FILE
    from recsys.model.config import TrainingDataError
    from recsys.model.train import EpochReport, train

    settings = get_settings()
    store = model_store.store_dir(settings)
    model_dir = out or store / f".training-{os.getpid()}"  # moved to <store>/<model_version> when done
    data_dir = data or settings.data_dir
    missing = [name for name in schema.DATA_FILES if not (data_dir / name).is_file()]
    if missing:
        fail(f"{data_dir} lacks {', '.join(missing)}: run `recsys generate` first, or pass --data DIR")
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("training", total=epochs)

        def on_epoch(report: EpochReport) -> None:
            line = (
                f"epoch {report.epoch}: loss {report.loss:.3f}, "
                f"valid {GATE_METRIC} {report.valid.get(GATE_METRIC, 0.0):.4f}, "
                f"{report.interactions_per_s:,.0f} interactions/s"
            )
            progress.update(task, completed=report.epoch, description=line)
            if not console.is_terminal:  # no live bar in a log file: one line per epoch instead
                console.print(line, highlight=False)

        if events:
            _merge_events(data or settings.data_dir)
        try:
            hp = Hyperparameters(epochs=epochs, seed=seed)
            train(data_dir, model_dir, hp, split=split, device=device, on_epoch=on_epoch)
        except (TrainingDataError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports
    stored = model_store.add(model_dir, store, move=out is None)
    result = json.loads((stored.path / METRICS_FILE).read_text())
    console.print(split_metrics_table(split, result, ranker_metrics(result)))
    config = json.loads((stored.path / CONFIG_FILE).read_text())["training"]
    if config.get("inputs_off"):
        console.print(f"inputs off (their columns are missing or empty): {', '.join(config['inputs_off'])}")
    dropped = result["details"]["dropped_interactions"]
    if dropped:
        console.print(f"{dropped:,} interactions skipped: their user or item is not in the users / items file")
    written = f"written to {out} and " if out is not None else ""
    best = config["best_epoch"]
    console.print(f"model {stored.model_version} {written}stored in {stored.path} (best epoch {best})")
    console.print("make it live: recsys publish", highlight=False)


def _merge_events(data_dir: Path) -> None:
    """`recsys events export` into the data set before training (once: ranks of torchrun would race)."""
    from recsys import schema
    from recsys.cli.events import merge_event_log

    if not all((Path(data_dir) / name).is_file() for name in schema.DATA_FILES):
        return  # train itself reports the missing files
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        console.print("not merging the event log under torchrun: run `recsys events export` before it")
        return
    report = merge_event_log(Path(data_dir))
    if report["added"]:
        console.print(f"merged {report['added']} logged events ({report['new_users']} new users) into {data_dir}")


@commands.command("evaluate")
def evaluate_cmd(
    data: DataDir = None,
    model: Annotated[
        str | None, typer.Option(help="model dir or stored model_version [default: the latest trained]")
    ] = None,
    k: Annotated[list[int] | None, typer.Option(help="cut-off, repeatable [default: 10 20 50]")] = None,
    split: Split = "temporal",
    seed: Annotated[int, typer.Option(help="seed of the random split (the one training used)")] = DEFAULT_RECIPE.seed,
    baselines_only: Annotated[bool, typer.Option(help="score only popularity, ItemKNN and EASE")] = False,
    out: Annotated[Path | None, typer.Option(help="also write the metrics JSON here")] = None,
) -> None:
    """Recompute the test-part metrics of the model and of the baselines (popularity, ItemKNN, EASE)."""
    from recsys import model_store
    from recsys.model.evaluate import DEFAULT_KS, evaluate_model_and_baselines

    settings = get_settings()
    try:
        model_dir = None if baselines_only else model_store.resolve(model)
    except model_store.ModelStoreError as exc:
        fail(str(exc))
    k_values = tuple(k) if k else DEFAULT_KS
    if min(k_values) < 1:
        fail("--k must be >= 1")
    try:
        with console.status(f"evaluating on the {split} split"):
            result = evaluate_model_and_baselines(data or settings.data_dir, model_dir, split, k_values, seed)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    systems = ranker_metrics(result)
    console.print(split_metrics_table(split, result, systems))
    console.print(f"EASE lambda (chosen on valid): {result['details']['ease_lambda']:g}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        console.print(f"metrics written to {out}")


@commands.command("publish")
def publish_cmd(
    model: Annotated[
        str | None,
        typer.Option(help="model dir or stored model_version [default: the latest trained in the model store]"),
    ] = None,
    data: Annotated[Path | None, typer.Option(help="parquet folder [default: the feature repo's data folder]")] = None,
    repo: Annotated[Path | None, typer.Option(help=f"feature repo folder {setting_default('feature_repo')}")] = None,
) -> None:
    """Item vectors -> pgvector + HNSW; item/user/text vectors and top-k per user -> Feast; then go live."""
    from recsys import db, feature_store, model_store
    from recsys.publish import publish
    from recsys.vector_index import registry

    try:
        stored = model_store.add(model_store.resolve(model))  # what goes live is in the store, for the predictor
    except model_store.ModelStoreError as exc:
        fail(str(exc))
    try:
        with console.status(f"publishing model {stored.model_version}: encoding, Feast views, pgvector"):
            report = publish(stored.path, data_dir=data, repo=repo)
    except registry.StaleModelVersionError as exc:
        fail(f"{exc}; to go back to it on purpose: recsys models rollback {stored.model_version}", code=1)
    except (feature_store.FeatureStoreError, db.DatabaseError) as exc:
        fail(str(exc), code=1)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    console.print(publish_table(report))
    console.print("timings: " + ", ".join(f"{k} {v:.2f}" for k, v in report.timings_s.items() if "feast_" not in k))
