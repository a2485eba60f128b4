"""The pipeline: its compiled YAML (GPU step, caching, retries, secrets by reference only, quality gate), the CLI,
and the whole DAG through kfp.local at tiny size, ending in a model the real predictor serves."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
import yaml

from components.settings import BASE_IMAGE
from pipelines.runner import compile_pipeline
from recsys import schema
from recsys.config import get_settings

ROOT = Path(__file__).resolve().parents[1]
SIDE_EFFECTING = ("include-events", "feast-apply", "materialize", "publish", "deploy-inference-service")
DB_STEPS = ("include-events", "feast-apply", "materialize", "publish")
MARKER_PASSWORD = "do-not-compile-me-7731"


def tasks(spec: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every task of every (sub-)DAG, by task name with the owning component's name as prefix."""
    found = {"root/" + name: task for name, task in spec["root"]["dag"]["tasks"].items()}
    for component_name, component in spec["components"].items():
        for name, task in component.get("dag", {}).get("tasks", {}).items():
            found[f"{component_name}/{name}"] = task
    return found


def named(spec: dict[str, Any], step: str) -> list[dict[str, Any]]:
    matching = [task for key, task in tasks(spec).items() if key.split("/")[1] == step]
    assert matching, step
    return matching


@pytest.fixture(scope="module")
def compiled(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, dict[str, Any], dict[str, Any]]:
    out = compile_pipeline(tmp_path_factory.mktemp("compiled") / "pipeline.yaml")
    text = out.read_text()
    spec, platform = yaml.safe_load_all(text)
    return text, spec, platform["platforms"]["kubernetes"]["deploymentSpec"]["executors"]


@pytest.mark.unit
def test_every_step_is_a_component_of_the_project_image(compiled: tuple) -> None:
    _, spec, _ = compiled
    executors = spec["deploymentSpec"]["executors"]
    steps = {name.removeprefix("exec-").rsplit("-2", 1)[0] for name in executors}
    assert steps == {
        "generate-data",
        "include-events",
        "generate-images",
        "feast-apply",
        "materialize",
        "train",
        "evaluate",
        "publish",
        "deploy-inference-service",
    }
    for executor in executors.values():
        assert executor["container"]["image"] == BASE_IMAGE
        assert "pip install" not in " ".join(executor["container"]["command"])  # the image holds everything


@pytest.mark.unit
def test_image_step_requests_one_gpu_with_settable_placement(compiled: tuple) -> None:
    _, spec, platform = compiled
    resources = spec["deploymentSpec"]["executors"]["exec-generate-images"]["container"]["resources"]
    assert resources["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert resources["accelerator"]["resourceCount"] == "1"
    placement = platform["exec-generate-images"]
    assert placement["nodeSelector"]["nodeSelectorJson"]["componentInputParameter"].endswith("gpu_node_selector")
    assert placement["tolerations"][0]["tolerationJson"]["componentInputParameter"].endswith("gpu_tolerations")
    gpu_free = [
        name
        for name, ex in spec["deploymentSpec"]["executors"].items()
        if "accelerator" in ex["container"].get("resources", {})
    ]
    assert gpu_free == ["exec-generate-images"]


@pytest.mark.unit
def test_images_are_optional_and_the_rest_runs_either_way(compiled: tuple) -> None:
    _, spec, _ = compiled
    conditions = [task["triggerPolicy"]["condition"] for task in tasks(spec).values() if "triggerPolicy" in task]
    assert "inputs.parameter_values['pipelinechannel--with_images'] == true" in conditions
    assert "!(inputs.parameter_values['pipelinechannel--with_images'] == true)" in conditions
    assert len(named(spec, "recsys-offline-steps")) + len(named(spec, "recsys-offline-steps-2")) == 2


@pytest.mark.unit
def test_publish_and_deploy_sit_behind_the_quality_gate_and_deploy_behind_its_flag(compiled: tuple) -> None:
    _, spec, _ = compiled
    components = spec["components"]
    for offline in ("comp-recsys-offline-steps", "comp-recsys-offline-steps-2"):
        dag = components[offline]["dag"]["tasks"]
        assert set(dag) == {"include-events", "feast-apply", "materialize", "train", "evaluate", "condition-1"}
        gate = dag["condition-1"]
        assert set(gate["dependentTasks"]) == {"include-events", "evaluate", "feast-apply", "materialize", "train"}
        assert (
            gate["triggerPolicy"]["condition"] == "inputs.parameter_values['pipelinechannel--evaluate-Output'] == true"
        )
        gated = components[gate["componentRef"]["name"]]["dag"]["tasks"]
        assert set(gated) == {"publish", "condition-2"}
        assert (
            gated["condition-2"]["triggerPolicy"]["condition"]
            == "inputs.parameter_values['pipelinechannel--deploy'] == true"
        )
        deploy = components[gated["condition-2"]["componentRef"]["name"]]["dag"]["tasks"]
        assert set(deploy) == {"deploy-inference-service"}
        assert gated["condition-2"]["dependentTasks"] == ["publish"]


@pytest.mark.unit
def test_side_effecting_steps_skip_the_cache_and_retry(compiled: tuple) -> None:
    _, spec, _ = compiled
    for step in SIDE_EFFECTING:
        for task in named(spec, step):
            assert task["cachingOptions"].get("enableCache") is not True, step
            assert task["retryPolicy"]["maxRetryCount"] >= 2, step
    for step in ("generate-data", "train", "evaluate"):
        for task in named(spec, step):
            assert task["cachingOptions"]["enableCache"] is True, step


@pytest.mark.unit
def test_database_steps_get_the_dsn_from_a_secret_reference_only(compiled: tuple) -> None:
    text, _, platform = compiled
    for executor, config in platform.items():
        step = executor.removeprefix("exec-").rsplit("-2", 1)[0]
        if step not in DB_STEPS:
            assert "secretAsEnv" not in config, executor
            continue
        [secret] = config["secretAsEnv"]
        assert secret["keyToEnv"] == [{"envVar": "RECSYS_PG_DSN", "secretKey": "dsn"}]
        assert secret["secretNameParameter"]["componentInputParameter"].endswith("db_secret_name")
        assert config["podMetadata"]["labels"] == {"recsys.io/db-client": "true"}
    assert sum(executor.removeprefix("exec-").rsplit("-2", 1)[0] in DB_STEPS for executor in platform) == 8
    assert "postgresql://" not in text and "password" not in text.lower()


@pytest.mark.unit
def test_no_secret_value_reaches_the_yaml_even_when_the_environment_holds_one(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "RECSYS_PG_DSN": f"postgresql://recsys:{MARKER_PASSWORD}@db:5432/recsys",
        "RECSYS_IMAGE": "registry.example.com/recsys:1.2.3",
    }
    out = tmp_path / "pipeline.yaml"
    subprocess.run(
        [str(Path(sys.executable).parent / "recsys"), "pipeline", "compile", "--out", str(out)],
        env=env,
        check=True,
        capture_output=True,
        cwd=ROOT,
    )
    text = out.read_text()
    assert MARKER_PASSWORD not in text and "db:5432" not in text
    spec = next(yaml.safe_load_all(text))
    images = {ex["container"]["image"] for ex in spec["deploymentSpec"]["executors"].values()}
    assert images == {"registry.example.com/recsys:1.2.3"}  # the one image setting


@pytest.mark.unit
def test_pipeline_run_needs_local_and_checks_sizes() -> None:
    from typer.testing import CliRunner

    from recsys.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["pipeline", "run"])
    assert result.exit_code == 2 and "--local" in result.output
    result = runner.invoke(app, ["pipeline", "run", "--local", "--n-users", "0"])
    assert result.exit_code == 2 and ">= 1" in result.output


@pytest.mark.unit
def test_submit_to_an_unreachable_host_fails_with_one_clear_line() -> None:
    from typer.testing import CliRunner

    from recsys.cli import app

    result = CliRunner().invoke(app, ["pipeline", "submit", "--host", "http://127.0.0.1:9"])
    assert result.exit_code == 1
    assert "submit to http://127.0.0.1:9 failed" in result.output
    assert "Traceback" not in result.output


# ------------------------------------------------------------------------------------------------ kfp.local
@pytest.fixture()
def isolated_project(pg_dsn: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private feature repo and state folder; every kfp.local step inherits them through the environment."""
    repo = tmp_path / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("*.parquet", "registry.db", "images"))
    monkeypatch.setenv("RECSYS_FEATURE_REPO", str(repo))
    monkeypatch.setenv("RECSYS_DATA_DIR", str(repo / "data"))
    monkeypatch.setenv("RECSYS_HOME", str(tmp_path / "home"))
    get_settings.cache_clear()
    yield repo
    get_settings.cache_clear()


@pytest.mark.e2e
def test_whole_dag_with_images_runs_locally_and_the_predictor_serves_its_model(isolated_project: Path) -> None:
    from sd_tiny import tiny_pipeline

    from pipelines.demo import demo_requests
    from pipelines.runner import run_local
    from recsys.predictor_process import running_predictor

    weights = isolated_project.parent / "sd-tiny"  # random weights: no download; the image branch runs for real
    tiny_pipeline().save_pretrained(weights)
    run = run_local(
        n_users=120,
        n_items=200,
        n_interactions=3000,
        seed=5,
        epochs=80,  # one step per epoch at 120 users: the recipe needs ~70 to beat popularity here
        min_recall_at_10=0.0,
        with_images=True,
        image_model=str(weights),
        image_device="cpu",
        image_steps=2,
        image_size=64,
        image_limit=3,
    )

    assert run.published, run.metrics
    assert run.run_dir.parent == get_settings().home / "pipeline-runs"
    assert run.metrics["model"]["recall@10"] > run.metrics["baselines"]["popularity"]["recall@10"]
    assert all((isolated_project / "data" / name).is_file() for name in schema.DATA_FILES)
    assert (isolated_project / "data" / schema.ITEM_EMBEDDING_FILE).is_file()  # publish wrote the views
    items = pd.read_parquet(isolated_project / "data" / schema.ITEMS_FILE)
    images = [Path(link) for link in items[schema.IMG_LINK].dropna() if link.startswith(str(run.run_dir))]
    assert len(images) == 3 and all(path.is_file() for path in images)  # the image step's data reached Feast

    with running_predictor(run.model_dir, run.run_dir / "predictor.log") as predictor:
        url = predictor.url
        for label, instance in demo_requests(isolated_project / "data", k=4):
            response = httpx.post(f"{url}/v1/models/recommender:predict", json={"instances": [instance]}, timeout=30)
            assert response.status_code == 200, (label, response.text)
            [prediction] = response.json()["predictions"]
            assert prediction["model_version"] == run.model_version, label
            assert len(prediction["items"]) == 4, label
        unknown = demo_requests(isolated_project / "data", k=4)[2][1]
        response = httpx.post(f"{url}/v1/models/recommender:predict", json={"instances": [unknown]}, timeout=30)
        assert response.json()["predictions"][0]["cold_start"] is True
