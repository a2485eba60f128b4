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
    console.print(pipeline_run_table(run))
    console.print(f"published: {'yes' if run.published else 'no (quality gate not passed)'}; run folder {run.run_dir}")


@pipeline_group.command("compile")
def pipeline_compile(
    out: Annotated[Path, typer.Option(help="where to write the pipeline YAML")] = Path("pipeline.yaml"),
) -> None:
    """Compile the pipeline to YAML (base image from RECSYS_IMAGE, default recsys:dev)."""
    from pipelines.runner import compile_pipeline

    console.print(f"wrote {compile_pipeline(out)}")


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
) -> None:
    """Run the whole DAG on this machine (kfp.local SubprocessRunner) against the embedded or RECSYS_PG_DSN Postgres."""
    if not local:
        fail("pass --local to run here, or use `recsys pipeline submit --host URL` for a cluster")
    from pipelines.runner import run_local

    arguments = _pipeline_arguments(
        n_users, n_items, n_interactions, seed, epochs, min_recall_at_10, with_images, image_limit, image_model
    )
    try:
        run = run_local(**arguments)
    except RuntimeError as exc:
        fail(f"pipeline run failed: {exc}", code=1)
    _print_pipeline_run(run)
    console.print(f"model dir: {run.model_dir}")


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
) -> None:
    """Submit one run to a Kubeflow Pipelines endpoint (kfp.Client); deploys the InferenceService when it passes."""
    from pipelines.runner import submit

    arguments = _pipeline_arguments(
        n_users, n_items, n_interactions, seed, epochs, min_recall_at_10, with_images, image_limit, image_model
    )
    try:
        run_id = submit(host, experiment=experiment, arguments=arguments, wait=wait)
    except Exception as exc:  # kfp.Client raises many kinds (connection, API, auth): report one line
        fail(f"submit to {host} failed: {type(exc).__name__}: {str(exc)[:300]}", code=1)
    console.print(f"submitted run {run_id} to {host} (experiment {experiment})")


class _ConsoleDemoReport:
    """The demo's progress as console rules, lines and tables (a pipelines.demo.DemoReport)."""

    def stage(self, title: str) -> None:
        console.rule(title)

    def note(self, text: str) -> None:
        console.print(text)

    def pipeline_finished(self, run: LocalRun) -> None:
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
) -> None:
    """The main job: Postgres -> the pipeline (kfp.local) -> the predictor -> recommendations for three users
    (with --ui: then the storefront page, until Ctrl-C)."""
    from pipelines.demo import run_demo
    from recsys.ui.server import UiConfigError, check_port_free

    if min(n_users, n_items, n_interactions, epochs, k) < 1:
        fail("sizes, --epochs and --k must be >= 1")
    if ui:
        try:
            check_port_free("127.0.0.1", ui_port)  # now, not after minutes of pipeline
        except UiConfigError as exc:
            fail(str(exc).replace("--http-port", "--ui-port"))
    try:
        run_demo(
            _ConsoleDemoReport(),
            k=k,
            ui_port=ui_port if ui else None,
            n_users=n_users,
            n_items=n_items,
            n_interactions=n_interactions,
            seed=seed,
            epochs=epochs,
        )
    except RuntimeError as exc:
        fail(str(exc), code=1)
