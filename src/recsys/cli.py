"""`recsys`: the command line. A thin shell: every command parses flags and calls one plain function.

Long imports (torch, feast, kfp, kserve) happen inside the commands so `recsys --help` stays fast.
Bad arguments exit with code 2 and a one-line message (typer.BadParameter / `fail`).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from recsys.config import get_settings
from recsys.images import (
    DEFAULT_BATCH_SIZE,
    DEFAULT_GUIDANCE,
    DEFAULT_MODEL,
    DEFAULT_SEED,
    DEFAULT_SIZE,
    DEFAULT_STEPS,
    ImageError,
    generate_images,
)

app = typer.Typer(
    name="recsys",
    help="Two-tower product recommender on Feast + pgvector, KServe and Kubeflow.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
db_app = typer.Typer(help="Embedded PostgreSQL + pgvector (ignored when RECSYS_PG_DSN is set).", no_args_is_help=True)
feast_app = typer.Typer(help="The Feast feature repo (feature_repo/).", no_args_is_help=True)
pipeline_app = typer.Typer(
    help="The Kubeflow pipeline: compile, run locally (kfp.local), submit.", no_args_is_help=True
)
app.add_typer(db_app, name="db")
app.add_typer(feast_app, name="feast")
app.add_typer(pipeline_app, name="pipeline")

console = Console()


def fail(message: str, code: int = 2) -> NoReturn:
    """Print a clear one-line error and exit (2 = bad input, 1 = the operation failed)."""
    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)
    raise typer.Exit(code)


# ------------------------------------------------------------------------------------------- db
@db_app.command("start")
def db_start() -> None:
    """Start the embedded Postgres (or check RECSYS_PG_DSN) and create the vector extension."""
    from recsys import db

    try:
        target = db.start()
    except db.DatabaseError as exc:
        fail(str(exc), code=1)
    console.print(f"PostgreSQL ready: {db.redacted(target)}")


@db_app.command("stop")
def db_stop() -> None:
    """Stop the embedded Postgres (never an external one)."""
    from recsys import db

    console.print("stopped" if db.stop() else "not running (or external server: left alone)")


@db_app.command("status")
def db_status() -> None:
    """Print whether the database answers, with server and pgvector versions."""
    from recsys import db

    console.print_json(json.dumps(db.status()))


@db_app.command("url")
def db_url() -> None:
    """Print the connection string (password redacted), starting the embedded server if needed."""
    from recsys import db

    try:
        print(db.redacted(db.dsn()))
    except db.DatabaseError as exc:
        fail(str(exc), code=1)


# ------------------------------------------------------------------------------------------- generate
@app.command("generate")
def generate_cmd(
    n_users: Annotated[int, typer.Option(help="number of users")] = 1000,
    n_items: Annotated[int, typer.Option(help="number of items")] = 5000,
    n_interactions: Annotated[int, typer.Option(help="number of interactions")] = 20000,
    seed: Annotated[int, typer.Option(help="random seed: the same seed gives identical files")] = 42,
    out: Annotated[Path | None, typer.Option(help="output folder [default: RECSYS_DATA_DIR]")] = None,
    preference_strength: Annotated[
        float | None,
        typer.Option(
            help="share of interactions that follow the user's taste, 0..1 (0 = popularity only) [default: 0.85]"
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
    from rich.table import Table

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
    table = Table(title=f"synthetic data in {target} ({report.seconds:.2f} s)")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for name, rows in zip(report.paths, (report.n_users, report.n_items, report.n_interactions), strict=True):
        table.add_row(name, f"{rows:,}")
    console.print(table)
    console.print("interaction types: " + ", ".join(f"{k} {v:,}" for k, v in report.type_counts.items()))
    console.print(
        f"planted signal: {report.preferred_share:.3f} of interactions fall in a user's preferred "
        f"categories (uniform choice: {report.uniform_share:.3f})"
    )


# ------------------------------------------------------------------------------------------- feast
@contextmanager
def _feast_errors() -> Iterator[None]:
    """A feature repo problem is bad input (exit 2); an unreachable database is a failed operation (exit 1)."""
    from recsys import db, features

    try:
        yield
    except features.FeatureStoreError as exc:
        fail(str(exc))
    except db.DatabaseError as exc:
        fail(str(exc), code=1)


@feast_app.command("apply")
def feast_apply(
    repo: Annotated[Path | None, typer.Option(help="feature repo folder [default: RECSYS_FEATURE_REPO]")] = None,
) -> None:
    """Create the vector extension and register entities, sources, the seven views and the services."""
    from recsys import features

    with _feast_errors(), console.status("feast apply"):
        deployed = features.apply(repo)
    for line in deployed:
        kind, _, name = line.rpartition(" ")
        console.print(f"Deployed {kind} [bold green]{name}[/]")


@feast_app.command("materialize")
def feast_materialize(
    repo: Annotated[Path | None, typer.Option(help="feature repo folder [default: RECSYS_FEATURE_REPO]")] = None,
) -> None:
    """Load item_features and user_features into the online store (idempotent)."""
    from recsys import features

    with _feast_errors(), console.status("feast materialize: item_features, user_features"):
        counts = features.materialize(repo)
    for view, count in counts.items():
        console.print(f"{view}: {count:,} entities online")


@feast_app.command("env")
def feast_env_cmd() -> None:
    """Print `export` lines for the ${VAR}s of feature_store.yaml: `eval "$(recsys feast env)"; feast apply`."""
    import shlex

    from recsys import db, features

    try:
        env = features.feast_env()
    except db.DatabaseError as exc:
        fail(str(exc), code=1)
    for key, value in env.items():
        print(f"export {key}={shlex.quote(value)}")


# ------------------------------------------------------------------------------------------- images
@app.command("images")
def images(
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
    ] = DEFAULT_MODEL,
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


# ------------------------------------------------------------------------------------------- train
@app.command("train")
def train_cmd(
    data: Annotated[Path | None, typer.Option(help="parquet folder [default: RECSYS_DATA_DIR]")] = None,
    out: Annotated[Path | None, typer.Option(help="model dir to write [default: RECSYS_MODEL_DIR]")] = None,
    split: Annotated[str, typer.Option(help="temporal | random")] = "temporal",
    epochs: Annotated[int, typer.Option(min=1, help="maximum epochs (early stopping on valid Recall@10)")] = 20,
    seed: Annotated[int, typer.Option(help="seed of the split and of training")] = 42,
    device: Annotated[str, typer.Option(help="auto | cpu | cuda")] = "auto",
) -> None:
    """Train the two-tower model, evaluate it against popularity, ItemKNN and EASE, write MODEL_DIR."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
    from rich.table import Table

    from recsys.model.train import EpochReport, TrainingDataError, train

    settings = get_settings()
    model_dir = out or settings.model_dir
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("training", total=epochs)

        def on_epoch(report: EpochReport) -> None:
            recall = report.valid.get("recall@10", 0.0)
            progress.update(
                task,
                completed=report.epoch,
                description=f"epoch {report.epoch}: loss {report.loss:.3f}, valid recall@10 {recall:.4f}, "
                f"{report.interactions_per_s:,.0f} interactions/s",
            )

        try:
            train(
                data or settings.data_dir,
                model_dir,
                split=split,
                epochs=epochs,
                seed=seed,
                device=device,
                on_epoch=on_epoch,
            )
        except (TrainingDataError, ValueError, FileNotFoundError) as exc:
            fail(str(exc))
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun only rank 0 reports
    result = json.loads((model_dir / "metrics.json").read_text())
    systems = {"two-tower": result["model"]} | result["baselines"]
    table = Table(title=f"{split} split: test part, {result['details']['users_evaluated']:,} users, full ranking")
    table.add_column("metric")
    for name in systems:
        table.add_column(name, justify="right")
    for metric in result["model"]:
        table.add_row(metric, *(f"{values[metric]:.4f}" for values in systems.values()))
    console.print(table)
    config = json.loads((model_dir / "config.json").read_text())["training"]
    version = (model_dir / "model_version").read_text().strip()
    console.print(f"model {version} written to {model_dir} (best epoch {config['best_epoch']})")


# ------------------------------------------------------------------------------------------- evaluate / publish
@app.command("evaluate")
def evaluate_cmd(
    data: Annotated[Path | None, typer.Option(help="parquet folder [default: RECSYS_DATA_DIR]")] = None,
    model: Annotated[Path | None, typer.Option(help="trained model dir [default: RECSYS_MODEL_DIR]")] = None,
    k: Annotated[list[int] | None, typer.Option(help="cut-off, repeatable [default: 10 20 50]")] = None,
    split: Annotated[str, typer.Option(help="temporal | random")] = "temporal",
    seed: Annotated[int, typer.Option(help="seed of the random split (the one training used)")] = 42,
    baselines_only: Annotated[bool, typer.Option(help="score only popularity, ItemKNN and EASE")] = False,
    out: Annotated[Path | None, typer.Option(help="also write the metrics JSON here")] = None,
) -> None:
    """Recompute the test-part metrics of the model and of the baselines (popularity, ItemKNN, EASE)."""
    from rich.table import Table

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
    table = Table(title=f"{split} split: test part, {result['details']['users_evaluated']:,} users, full ranking")
    table.add_column("metric")
    for name in systems:
        table.add_column(name, justify="right")
    for metric in next(iter(systems.values())):
        table.add_row(metric, *(f"{values[metric]:.4f}" for values in systems.values()))
    console.print(table)
    console.print(f"EASE lambda (chosen on valid): {result['details']['ease_lambda']:g}")
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2))
        console.print(f"metrics written to {out}")


@app.command("publish")
def publish_cmd(
    model: Annotated[Path | None, typer.Option(help="trained model dir [default: RECSYS_MODEL_DIR]")] = None,
    data: Annotated[Path | None, typer.Option(help="parquet folder [default: the feature repo's data]")] = None,
    repo: Annotated[Path | None, typer.Option(help="feature repo folder [default: RECSYS_FEATURE_REPO]")] = None,
) -> None:
    """Item vectors -> pgvector + HNSW; item/user/text vectors and top-k per user -> Feast; then go live."""
    from rich.table import Table

    from recsys import db, features, index
    from recsys.publish import publish

    try:
        with console.status("publishing: encoding, Feast views, pgvector"):
            report = publish(model or get_settings().model_dir, data_dir=data, repo=repo)
    except (index.StaleModelVersionError, features.FeatureStoreError, db.DatabaseError) as exc:
        fail(str(exc), code=1)
    except (ValueError, FileNotFoundError) as exc:
        fail(str(exc))
    table = Table(title=f"published model {report.model_version} (live: {report.live_model_version})")
    table.add_column("written to")
    table.add_column("rows", justify="right")
    table.add_column("notes")
    for name, result in (("pgvector items", report.item_vectors), ("pgvector text", report.text_vectors)):
        build = "index existed" if result.index_build_s is None else f"HNSW built in {result.index_build_s:.2f} s"
        notes = f"{result.written:,} changed, {result.deleted:,} removed; COPY {result.copy_rows_per_s:,.0f} rows/s; {build}"
        table.add_row(name, f"{report.items:,}", notes)
    for view, rows in report.feast_rows.items():
        table.add_row(f"Feast {view}", f"{rows:,}", f"{report.timings_s[f'feast_{view}_s']:.2f} s")
    table.add_row("user history", f"{report.history_users:,}", "")
    console.print(table)
    console.print("timings: " + ", ".join(f"{k} {v:.2f}" for k, v in report.timings_s.items() if "feast_" not in k))


# ------------------------------------------------------------------------------------------- serving
@app.command("serve")
def serve_cmd(
    model_dir: Annotated[Path | None, typer.Option(help="trained model dir [default: RECSYS_MODEL_DIR]")] = None,
    http_port: Annotated[int, typer.Option(help="HTTP port of the KServe ModelServer")] = 8080,
) -> None:
    """Run the KServe predictor (model `recommender`, V1 and V2 protocols) until interrupted."""
    from serving.__main__ import serve

    serve(model_dir or get_settings().model_dir, http_port)


@app.command("recommend")
def recommend_cmd(
    user_id: Annotated[str | None, typer.Option(help="a known (or unknown) user id")] = None,
    k: Annotated[int, typer.Option(help="how many items")] = 10,
    preferences: Annotated[str | None, typer.Option(help="new-user profile: '|'-joined categories")] = None,
    age: Annotated[int | None, typer.Option(help="new-user profile: age")] = None,
    gender: Annotated[str | None, typer.Option(help="new-user profile: gender")] = None,
    timestamp: Annotated[str | None, typer.Option(help="request time, ISO 8601 [default: now]")] = None,
    url: Annotated[str | None, typer.Option(help="ask a running predictor (http://host:port) instead")] = None,
    model_dir: Annotated[Path | None, typer.Option(help="model dir for the in-process path")] = None,
) -> None:
    """Print the top-k recommendations for a user (in-process, or through a running predictor with --url)."""
    from recsys.request_models import RequestError, parse_instances

    instance: dict = {"k": k}
    if user_id is not None:
        instance["user_id"] = user_id
    profile = {key: v for key, v in (("preferences", preferences), ("age", age), ("gender", gender)) if v is not None}
    if profile:
        instance["user"] = profile
    if timestamp is not None:
        instance["context"] = {"timestamp": timestamp}
    body = {"instances": [instance]}
    try:
        requests = parse_instances(body)
    except RequestError as exc:
        fail(str(exc))
    if url is not None:
        import httpx

        try:
            response = httpx.post(f"{url.rstrip('/')}/v1/models/recommender:predict", json=body, timeout=30)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {url}: {type(exc).__name__}", code=1)
        if response.status_code != 200:
            fail(f"{response.status_code}: {response.text}", code=1)
        console.print_json(json.dumps(response.json()["predictions"][0]))
        return
    from recsys.recommender import NotReady, Recommender

    recommender = Recommender.from_settings(model_dir, poll=False)
    try:
        console.print_json(json.dumps(recommender.recommend(requests)[0]))
    except NotReady as exc:
        fail(f"not ready: {exc} (has `recsys publish` run for this model?)", code=1)
    finally:
        recommender.close()


# ------------------------------------------------------------------------------------------- search
def _answer_one(instance: dict, url: str | None, model_dir: Path | None) -> None:
    """Validate one search / similar instance, answer it through a predictor (`url`) or in-process, print it."""
    from recsys.request_models import RequestError, parse_instances

    body = {"instances": [instance]}
    try:
        requests = parse_instances(body)
    except RequestError as exc:
        fail(str(exc))
    if url is not None:
        import httpx

        try:
            response = httpx.post(f"{url.rstrip('/')}/v1/models/recommender:predict", json=body, timeout=30)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {url}: {type(exc).__name__}", code=1)
        if response.status_code == 400:
            fail(response.json().get("error", response.text))
        if response.status_code != 200:
            fail(f"{response.status_code}: {response.text}", code=1)
        console.print_json(json.dumps(response.json()["predictions"][0]))
        return
    from recsys.recommender import NotReady, Recommender
    from recsys.search import Searcher

    recommender = Recommender.from_settings(model_dir, poll=False)
    try:
        console.print_json(json.dumps(Searcher(recommender).answer(requests)[0]))
    except RequestError as exc:
        fail(str(exc))
    except NotReady as exc:
        fail(f"not ready: {exc} (has `recsys publish` run for this model?)", code=1)
    finally:
        recommender.close()


SearchK = Annotated[int, typer.Option(help="how many items")]
SearchTimestamp = Annotated[
    str | None, typer.Option(help="request time, ISO 8601, for the availability filter [default: now]")
]
SearchUrl = Annotated[str | None, typer.Option(help="ask a running predictor (http://host:port) instead")]
SearchModelDir = Annotated[Path | None, typer.Option(help="model dir for the in-process path")]


@app.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="what to look for, e.g. 'wireless headphones for running'")],
    k: SearchK = 10,
    user_id: Annotated[str | None, typer.Option(help="personalise the order for this user")] = None,
    timestamp: SearchTimestamp = None,
    url: SearchUrl = None,
    model_dir: SearchModelDir = None,
) -> None:
    """Semantic search over product names + descriptions (personalised with --user-id)."""
    instance: dict = {"query": query, "k": k}
    if user_id is not None:
        instance["user_id"] = user_id
    if timestamp is not None:
        instance["context"] = {"timestamp": timestamp}
    _answer_one(instance, url, model_dir)


@app.command("similar")
def similar_cmd(
    item_id: Annotated[str, typer.Option(help="the item to find look-alikes of")],
    k: SearchK = 10,
    timestamp: SearchTimestamp = None,
    url: SearchUrl = None,
    model_dir: SearchModelDir = None,
) -> None:
    """Items nearest to an item by the two-tower vectors ("customers also viewed"), the item itself excluded."""
    instance: dict = {"item_id": item_id, "k": k}
    if timestamp is not None:
        instance["context"] = {"timestamp": timestamp}
    _answer_one(instance, url, model_dir)


# ------------------------------------------------------------------------------------------- pipeline
PipelineSizes = tuple[int, int, int, int]  # n_users, n_items, n_interactions, seed


def _pipeline_arguments(
    sizes: PipelineSizes, epochs: int, min_recall_at_10: float, images: tuple[bool, int, str]
) -> dict:
    n_users, n_items, n_interactions, seed = sizes
    with_images, image_limit, image_model = images
    if min(n_users, n_items, n_interactions, epochs) < 1 or image_limit < 0:
        fail("sizes and --epochs must be >= 1 and --image-limit >= 0")
    return {
        "n_users": n_users,
        "n_items": n_items,
        "n_interactions": n_interactions,
        "seed": seed,
        "epochs": epochs,
        "min_recall_at_10": min_recall_at_10,
        "with_images": with_images,
        "image_limit": image_limit,
        "image_model": image_model,
    }


NUsers = Annotated[int, typer.Option(help="synthetic users")]
NItems = Annotated[int, typer.Option(help="synthetic items")]
NInteractions = Annotated[int, typer.Option(help="synthetic interactions")]
Seed = Annotated[int, typer.Option(help="seed of data, training and images")]
Epochs = Annotated[int, typer.Option(help="maximum training epochs (early stopping on validation)")]
MinRecall = Annotated[float, typer.Option(help="quality gate: minimum test Recall@10 to publish")]
WithImages = Annotated[bool, typer.Option(help="run the Stable Diffusion step (GPU on a cluster)")]
ImageLimit = Annotated[int, typer.Option(help="images for the first N items only (0 = all)")]
ImageModel = Annotated[str, typer.Option(help="Stable Diffusion model id or local folder (the image step)")]
DEFAULT_IMAGE_MODEL = "runwayml/stable-diffusion-v1-5"


@pipeline_app.command("compile")
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="where to write the pipeline YAML")] = Path("pipeline.yaml"),
) -> None:
    """Compile the pipeline to YAML (base image from RECSYS_IMAGE, default recsys:dev)."""
    from pipelines.runner import compile_pipeline

    console.print(f"wrote {compile_pipeline(out)}")


@pipeline_app.command("run")
def pipeline_run(
    local: Annotated[bool, typer.Option("--local", help="run here with kfp.local (the only runner here)")] = False,
    n_users: NUsers = 1000,
    n_items: NItems = 5000,
    n_interactions: NInteractions = 20000,
    seed: Seed = 42,
    epochs: Epochs = 20,
    min_recall_at_10: MinRecall = 0.05,
    with_images: WithImages = False,
    image_limit: ImageLimit = 0,
    image_model: ImageModel = DEFAULT_IMAGE_MODEL,
) -> None:
    """Run the whole DAG on this machine (kfp.local SubprocessRunner) against the embedded or RECSYS_PG_DSN Postgres."""
    if not local:
        fail("pass --local to run here, or use `recsys pipeline submit --host URL` for a cluster")
    from pipelines.demo import print_pipeline_summary
    from pipelines.runner import run_local

    arguments = _pipeline_arguments(
        (n_users, n_items, n_interactions, seed), epochs, min_recall_at_10, (with_images, image_limit, image_model)
    )
    try:
        run = run_local(**arguments)
    except RuntimeError as exc:
        fail(f"pipeline run failed: {exc}", code=1)
    print_pipeline_summary(console, run)
    console.print(f"model dir: {run.model_dir}")


@pipeline_app.command("submit")
def pipeline_submit(
    host: Annotated[str, typer.Option(help="Kubeflow Pipelines API, e.g. http://127.0.0.1:8888")],
    experiment: Annotated[str, typer.Option(help="experiment name")] = "recsys",
    wait: Annotated[bool, typer.Option(help="wait for the run to finish")] = False,
    n_users: NUsers = 1000,
    n_items: NItems = 5000,
    n_interactions: NInteractions = 20000,
    seed: Seed = 42,
    epochs: Epochs = 20,
    min_recall_at_10: MinRecall = 0.05,
    with_images: WithImages = False,
    image_limit: ImageLimit = 0,
    image_model: ImageModel = DEFAULT_IMAGE_MODEL,
) -> None:
    """Submit one run to a Kubeflow Pipelines endpoint (kfp.Client); deploys the InferenceService when it passes."""
    from pipelines.runner import submit

    arguments = _pipeline_arguments(
        (n_users, n_items, n_interactions, seed), epochs, min_recall_at_10, (with_images, image_limit, image_model)
    )
    try:
        run_id = submit(host, experiment=experiment, arguments=arguments, wait=wait)
    except Exception as exc:  # kfp.Client raises many kinds (connection, API, auth): report one line
        fail(f"submit to {host} failed: {type(exc).__name__}: {str(exc)[:300]}", code=1)
    console.print(f"submitted run {run_id} to {host} (experiment {experiment})")


# ------------------------------------------------------------------------------------------- demo
@app.command("demo")
def demo_cmd(
    n_users: NUsers = 1000,
    n_items: NItems = 5000,
    n_interactions: NInteractions = 20000,
    seed: Seed = 42,
    epochs: Epochs = 20,
    k: Annotated[int, typer.Option(help="recommendations per user")] = 5,
) -> None:
    """The main job: Postgres -> the pipeline (kfp.local) -> the predictor -> recommendations for three users."""
    from pipelines.demo import run_demo

    if min(n_users, n_items, n_interactions, epochs, k) < 1:
        fail("sizes, --epochs and --k must be >= 1")
    try:
        run_demo(
            console, k=k, n_users=n_users, n_items=n_items, n_interactions=n_interactions, seed=seed, epochs=epochs
        )
    except RuntimeError as exc:
        fail(str(exc), code=1)
