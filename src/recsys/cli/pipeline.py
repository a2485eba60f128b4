"""`recsys pipeline compile|run|submit` (the Kubeflow pipeline) and `recsys demo` (the main job, end to end)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from recsys.cli.output import console, fail
from recsys.cli.tables import pipeline_run_table, recommendations_table
from recsys.contract import DEFAULT_IMAGE_MODEL, DEFAULT_N_INTERACTIONS, DEFAULT_N_ITEMS, DEFAULT_N_USERS
from recsys.model.config import Hyperparameters

if TYPE_CHECKING:
    from pipelines.runner import LocalRun
    from pipelines.workspace import Workspace
    from recsys.training_job import DistributedTraining

pipeline_group = typer.Typer(
    name="pipeline", help="The Kubeflow pipeline: compile, run locally (kfp.local), submit.", no_args_is_help=True
)
commands = typer.Typer()  # `recsys demo` and the `recsys pipeline` group
commands.add_typer(pipeline_group)

DEFAULT_RECIPE = Hyperparameters()
NUsers = Annotated[int, typer.Option(help="synthetic users")]
NItems = Annotated[int, typer.Option(help="synthetic items")]
NInteractions = Annotated[int, typer.Option(help="synthetic interactions")]
Seed = Annotated[int, typer.Option(help="seed of data, training and images")]
Epochs = Annotated[int, typer.Option(help="maximum training epochs (early stopping on validation)")]
MinRecall = Annotated[float, typer.Option(help="quality gate: minimum test Recall@10 to publish")]
WithImages = Annotated[bool, typer.Option(help="run the Stable Diffusion step (GPU on a cluster)")]
ImageLimit = Annotated[int, typer.Option(help="images for the first N items only (0 = all)")]
ImageModel = Annotated[str, typer.Option(help="Stable Diffusion model id or local folder (the image step)")]
DataSource = Annotated[
    Path | None,
    typer.Option(
        "--data", help="folder with your three parquet files to run on [default: synthetic data, sizes above]"
    ),
]
Overwrite = Annotated[
    bool,
    typer.Option(
        help="let the run replace parquet files in the feature repo's data/ that no run wrote "
        "[default: keep them; the run then uses a copy of the repo under RECSYS_HOME]"
    ),
]
Verbose = Annotated[bool, typer.Option("--verbose", help="show the steps' output here, not only in the run's log")]
TrainWorkers = Annotated[
    int, typer.Option(help="training pods: > 1 runs the train step as a Kubeflow Trainer TrainJob (1 = in the step)")
]
TrainProcs = Annotated[int, typer.Option(help="torchrun processes per training pod (CPU; with GPUs one per GPU)")]
TrainGpus = Annotated[int, typer.Option(help="GPUs per training pod (nccl); 0 = CPU (gloo)")]
DEFAULT_MIN_RECALL = 0.05


def _pipeline_arguments(
    n_users: int,
    n_items: int,
    n_interactions: int,
    seed: int,
    epochs: int,
    min_recall_at_10: float,
    with_images: bool,
    image_limit: int,
    image_model: str,
) -> dict[str, Any]:
    """The run's pipeline parameters, after the checks the pipeline itself would only fail on much later."""
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


def _print_pipeline_run(run: LocalRun) -> None:
    from recsys import db, model_store
    from recsys.config import get_settings

    console.print(pipeline_run_table(run))
    if run.published:
        target = db.redacted(db.dsn(start=False))
        console.print(f"published: model {run.model_version} is live in {target} (pgvector + Feast online store)")
        console.print(f"  data: {get_settings().data_dir}; model store: {model_store.store_dir() / run.model_version}")
    else:
        console.print("published: no (quality gate not passed); the live model is unchanged")
    console.print(f"run folder {run.run_dir}" + (f"; the steps' output: {run.log_file}" if run.log_file else ""))


def _workspace(data: Path | None, overwrite: bool, verbose: bool) -> tuple[Workspace, dict[str, Any]]:
    """Where the run writes (never over the user's own files unless --overwrite) and the run arguments that
    follow from --data and --verbose."""
    import os

    from pipelines import workspace
    from recsys import schema
    from recsys.config import get_settings

    extra: dict[str, Any] = {}
    if data is not None:
        missing = [name for name in schema.DATA_FILES if not (data / name).is_file()]
        if missing:
            fail(f"--data {data} lacks {', '.join(missing)}")
        extra["data_source"] = str(data.resolve())
    chosen = workspace.choose(overwrite)
    workspace.use(chosen)
    if chosen.user_files_kept:
        names = ", ".join(path.name for path in chosen.user_files_kept)
        console.print(
            f"{chosen.user_files_kept[0].parent} holds files no pipeline run wrote ({names}): they stay as they are;"
            f" this run uses {chosen.feature_repo} (--overwrite replaces them, --data DIR runs on them)"
        )
    if not verbose:
        extra["log_file"] = get_settings().home / "pipeline-runs" / f".run-{os.getpid()}.log"
        console.print("running the pipeline (kfp.local); the steps' output goes to the run's pipeline.log (--verbose)")
    return chosen, extra


def _distributed_training(workers: int, procs_per_worker: int, gpus_per_worker: int) -> DistributedTraining | None:
    """The TrainJob's shape, or None for in-step training (the defaults)."""
    from components.settings import BASE_IMAGE
    from recsys.training_job import distributed_training

    try:
        return distributed_training(workers, procs_per_worker, gpus_per_worker, BASE_IMAGE)
    except ValueError as exc:
        fail(f"--train-workers/--train-procs-per-worker/--train-gpus-per-worker: {exc}")


@pipeline_group.command("compile")
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="where to write the pipeline YAML")] = Path("pipeline.yaml"),
    train_workers: TrainWorkers = 1,
    train_procs_per_worker: TrainProcs = 1,
    train_gpus_per_worker: TrainGpus = 0,
) -> None:
    """Compile the pipeline to YAML (base image from RECSYS_IMAGE, default recsys:dev)."""
    from pipelines.runner import compile_pipeline

    training = _distributed_training(train_workers, train_procs_per_worker, train_gpus_per_worker)
    console.print(f"wrote {compile_pipeline(out, training)}")


@pipeline_group.command("run")
def pipeline_run(
    local: Annotated[bool, typer.Option("--local", help="run here with kfp.local (the only runner here)")] = False,
    n_users: NUsers = DEFAULT_N_USERS,
    n_items: NItems = DEFAULT_N_ITEMS,
    n_interactions: NInteractions = DEFAULT_N_INTERACTIONS,
    seed: Seed = DEFAULT_RECIPE.seed,
    epochs: Epochs = DEFAULT_RECIPE.epochs,
    min_recall_at_10: MinRecall = DEFAULT_MIN_RECALL,
    with_images: WithImages = False,
    image_limit: ImageLimit = 0,
    image_model: ImageModel = DEFAULT_IMAGE_MODEL,
    data: DataSource = None,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
) -> None:
    """Run the whole DAG on this machine (kfp.local SubprocessRunner) against the embedded or RECSYS_PG_DSN Postgres."""
    if not local:
        fail("pass --local to run here, or use `recsys pipeline submit --host URL` for a cluster")
    from pipelines import workspace
    from pipelines.runner import run_local
    from recsys.config import get_settings

    arguments = _pipeline_arguments(
        n_users, n_items, n_interactions, seed, epochs, min_recall_at_10, with_images, image_limit, image_model
    )
    user_repo = get_settings().feature_repo
    chosen, extra = _workspace(data, overwrite, verbose)
    try:
        run = run_local(**arguments, **extra)
    except RuntimeError as exc:
        fail(f"pipeline run failed: {exc}", code=1)
    workspace.record_run(chosen, user_repo)
    _print_pipeline_run(run)


@pipeline_group.command("submit")
def pipeline_submit(
    host: Annotated[str, typer.Option(help="Kubeflow Pipelines API, e.g. http://127.0.0.1:8888")],
    experiment: Annotated[str, typer.Option(help="experiment name")] = "recsys",
    wait: Annotated[bool, typer.Option(help="wait for the run to finish")] = False,
    n_users: NUsers = DEFAULT_N_USERS,
    n_items: NItems = DEFAULT_N_ITEMS,
    n_interactions: NInteractions = DEFAULT_N_INTERACTIONS,
    seed: Seed = DEFAULT_RECIPE.seed,
    epochs: Epochs = DEFAULT_RECIPE.epochs,
    min_recall_at_10: MinRecall = DEFAULT_MIN_RECALL,
    with_images: WithImages = False,
    image_limit: ImageLimit = 0,
    image_model: ImageModel = DEFAULT_IMAGE_MODEL,
    train_workers: TrainWorkers = 1,
    train_procs_per_worker: TrainProcs = 1,
    train_gpus_per_worker: TrainGpus = 0,
) -> None:
    """Submit one run to a Kubeflow Pipelines endpoint (kfp.Client); deploys the InferenceService when it passes."""
    from pipelines.runner import submit

    arguments = _pipeline_arguments(
        n_users, n_items, n_interactions, seed, epochs, min_recall_at_10, with_images, image_limit, image_model
    )
    training = _distributed_training(train_workers, train_procs_per_worker, train_gpus_per_worker)
    try:
        run_id = submit(host, experiment=experiment, arguments=arguments, wait=wait, training=training)
    except Exception as exc:  # kfp.Client raises many kinds (connection, API, auth): report one line
        fail(f"submit to {host} failed: {type(exc).__name__}: {_first_line(exc)}", code=1)
    console.print(f"submitted run {run_id} to {host} (experiment {experiment})")


def _first_line(exc: Exception) -> str:
    """An exception's first line, whole (kfp.Client errors carry pages of HTTP detail after it)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class _ConsoleDemoReport:
    """The demo's progress as console rules, lines and tables (a pipelines.demo.DemoReport); once the pipeline
    has run, the files it wrote into `workspace` are recorded."""

    def __init__(self, workspace: Workspace, user_repo: Path) -> None:
        self.workspace, self.user_repo = workspace, user_repo

    def stage(self, title: str) -> None:
        console.rule(title)

    def note(self, text: str) -> None:
        console.print(text)

    def pipeline_finished(self, run: LocalRun) -> None:
        from pipelines import workspace

        workspace.record_run(self.workspace, self.user_repo)
        _print_pipeline_run(run)

    def answer(self, label: str, prediction: dict[str, Any]) -> None:
        console.print(recommendations_table(label, prediction))


@commands.command("demo")
def demo_cmd(
    n_users: NUsers = DEFAULT_N_USERS,
    n_items: NItems = DEFAULT_N_ITEMS,
    n_interactions: NInteractions = DEFAULT_N_INTERACTIONS,
    seed: Seed = DEFAULT_RECIPE.seed,
    epochs: Epochs = DEFAULT_RECIPE.epochs,
    k: Annotated[int, typer.Option(help="recommendations per user")] = 5,
    ui: Annotated[
        bool, typer.Option("--ui", help="then keep the predictor and the storefront page running until Ctrl-C")
    ] = False,
    ui_port: Annotated[int, typer.Option(help="port of the storefront page (with --ui)")] = 8000,
    data: DataSource = None,
    overwrite: Overwrite = False,
    verbose: Verbose = False,
) -> None:
    """The main job: Postgres -> the pipeline (kfp.local) -> the predictor -> recommendations for three users
    (with --ui: then the storefront page, until Ctrl-C)."""
    from pipelines.demo import run_demo
    from recsys.config import get_settings
    from recsys.ui.server import UiConfigError, check_port_free

    if min(n_users, n_items, n_interactions, epochs, k) < 1:
        fail("sizes, --epochs and --k must be >= 1")
    if ui:
        try:
            check_port_free("127.0.0.1", ui_port)  # now, not after minutes of pipeline
        except UiConfigError as exc:
            fail(str(exc).replace("--http-port", "--ui-port"))
    user_repo = get_settings().feature_repo
    chosen, extra = _workspace(data, overwrite, verbose)
    try:
        run_demo(
            _ConsoleDemoReport(chosen, user_repo),
            k=k,
            ui_port=ui_port if ui else None,
            n_users=n_users,
            n_items=n_items,
            n_interactions=n_interactions,
            seed=seed,
            epochs=epochs,
            **extra,
        )
    except RuntimeError as exc:
        fail(str(exc), code=1)
