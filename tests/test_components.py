"""Every pipeline component's body (`component.python_func`) on tiny data, with real artifact objects.

The bodies run in this process exactly as kfp's executor would call them. Feast and publish steps use the
session's embedded Postgres and a private copy of the feature repo. The deploy step's cluster is the one fake
(no Kubernetes API server here): a stand-in CustomObjectsApi from test_manifests.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from kfp.dsl import Artifact, Dataset, Metrics, Model

from components import staging
from components.data import generate_data, generate_images
from components.features import feast_apply, materialize
from components.model import evaluate, train
from components.serving import deploy_inference_service, publish
from recsys import schema
from recsys.config import get_settings

ROOT = Path(__file__).resolve().parents[1]


def artifact(kind: type, path: Path, name: str = "artifact") -> Artifact:
    return kind(name=name, uri=str(path))


@pytest.fixture()
def feature_repo_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """An empty private copy of feature_repo/ named by RECSYS_FEATURE_REPO / RECSYS_DATA_DIR."""
    repo = tmp_path / "feature_repo"
    shutil.copytree(ROOT / "feature_repo", repo, ignore=shutil.ignore_patterns("*.parquet", "registry.db", "images"))
    monkeypatch.setenv("RECSYS_FEATURE_REPO", str(repo))
    monkeypatch.setenv("RECSYS_DATA_DIR", str(repo / "data"))
    get_settings.cache_clear()
    yield repo
    get_settings.cache_clear()


@pytest.fixture(scope="module")
def trained(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Model:
    model = artifact(Model, tmp_path_factory.mktemp("train") / "model", "model")
    train.python_func(data=artifact(Dataset, tiny_data), split="temporal", epochs=1.0, seed=7.0, model=model)
    return model


# ------------------------------------------------------------------------------------------------ glue
@pytest.mark.unit
def test_copy_data_files_needs_all_three_files(tmp_path: Path, tiny_data: Path) -> None:
    copied = staging.copy_data_files(tiny_data, tmp_path / "copy")
    assert sorted(p.name for p in copied) == sorted(schema.DATA_FILES)
    assert not list((tmp_path / "copy").glob(".*partial"))
    (tmp_path / "partial").mkdir()
    shutil.copy(tiny_data / schema.USERS_FILE, tmp_path / "partial")
    with pytest.raises(FileNotFoundError, match=schema.ITEMS_FILE):
        staging.copy_data_files(tmp_path / "partial", tmp_path / "out")
    assert not (tmp_path / "out").exists()


@pytest.mark.unit
@pytest.mark.parametrize(
    ("model", "popularity", "threshold", "passed"),
    [(0.20, 0.10, 0.05, True), (0.20, 0.10, 0.25, False), (0.10, 0.10, 0.0, False), (0.05, 0.10, 0.0, False)],
)
def test_quality_gate(model: float, popularity: float, threshold: float, passed: bool) -> None:
    metrics = {"model": {"recall@10": model}, "baselines": {"popularity": {"recall@10": popularity}}}
    assert staging.quality_gate(metrics, threshold) is passed


@pytest.mark.unit
def test_quality_gate_refuses_metrics_without_a_model() -> None:
    with pytest.raises(ValueError, match="recall@10"):
        staging.quality_gate({"baselines": {"popularity": {"recall@10": 0.1}}}, 0.0)


@pytest.mark.unit
def test_metrics_to_log_flattens_model_and_baselines() -> None:
    metrics = {
        "model": {"recall@10": 0.3, "ndcg@10": 0.2, "hit@10": 0.5},
        "baselines": {"popularity": {"recall@10": 0.1, "ndcg@10": 0.05}},
    }
    assert staging.metrics_to_log(metrics) == {
        "model_recall@10": 0.3,
        "model_ndcg@10": 0.2,
        "popularity_recall@10": 0.1,
        "popularity_ndcg@10": 0.05,
    }
    with_retrieval = {**metrics, "retrieval": {"recall@10": 0.25, "ndcg@10": 0.15}}
    assert staging.metrics_to_log(with_retrieval) == {
        **staging.metrics_to_log(metrics),
        "retrieval_recall@10": 0.25,
        "retrieval_ndcg@10": 0.15,
    }


@pytest.mark.unit
def test_registry_file_follows_feature_store_yaml(feature_repo_env: Path, tmp_path: Path) -> None:
    assert staging.registry_file() == feature_repo_env / "data" / "registry.db"
    config = feature_repo_env / "feature_store.yaml"
    config.write_text(config.read_text().replace("registry_type: file", "registry_type: sql"))
    assert staging.registry_file() is None
    staging.save_registry(tmp_path / "saved")  # a remote registry: an empty marker, restored as a no-op
    assert (tmp_path / "saved").read_bytes() == b""
    staging.restore_registry(tmp_path / "saved")


# ------------------------------------------------------------------------------------------------ components
@pytest.mark.unit
def test_generate_data_writes_the_dataset_and_takes_float_ints(tmp_path: Path) -> None:
    data = artifact(Dataset, tmp_path / "data", "data")
    generate_data.python_func(n_users=30.0, n_items=40.0, n_interactions=300.0, seed=3.0, data=data)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == sorted(schema.DATA_FILES)
    assert len(pd.read_parquet(tmp_path / "data" / schema.USERS_FILE)) == 30
    assert data.metadata["n_interactions"] == 300


@pytest.mark.unit
def test_generate_images_renders_into_its_own_copy(tmp_path: Path, tiny_data: Path) -> None:
    from sd_tiny import tiny_pipeline

    weights = tmp_path / "sd-tiny"
    tiny_pipeline().save_pretrained(weights)
    out = artifact(Dataset, tmp_path / "with_images", "data_with_images")
    generate_images.python_func(
        data=artifact(Dataset, tiny_data),
        model=str(weights),
        device="cpu",
        steps=2.0,
        guidance=7.5,
        size=64.0,
        limit=3.0,
        batch_size=2.0,
        seed=1.0,
        data_with_images=out,
    )
    items = pd.read_parquet(tmp_path / "with_images" / schema.ITEMS_FILE)
    linked = items[schema.IMG_LINK].dropna()
    linked = linked[linked.str.startswith(str(tmp_path / "with_images" / "images"))]
    assert len(linked) == 3 and all(Path(link).is_file() for link in linked)
    assert out.metadata["images_generated"] == 3
    original = pd.read_parquet(tiny_data / schema.ITEMS_FILE)  # the input artifact is left as it was
    assert not original[schema.IMG_LINK].astype("string").str.contains("with_images", na=False).any()


@pytest.mark.unit
def test_train_outputs_a_model_artifact(trained: Model) -> None:
    from recsys.model.artifacts import METRICS_FILE, MODEL_VERSION_FILE

    model_dir = Path(trained.path)
    assert trained.metadata["model_version"] == (model_dir / MODEL_VERSION_FILE).read_text().strip()
    assert "recall@10" in json.loads((model_dir / METRICS_FILE).read_text())["model"]


@pytest.mark.unit
def test_evaluate_logs_metrics_and_decides_the_gate(trained: Model, tiny_data: Path, tmp_path: Path) -> None:
    metrics = artifact(Metrics, tmp_path / "metrics", "metrics")
    passed = evaluate.python_func(
        data=artifact(Dataset, tiny_data),
        model=trained,
        split="temporal",
        seed=7.0,
        min_recall_at_10=0.0,
        metrics=metrics,
    )
    logged = metrics.metadata
    for name in ("model_recall@10", "model_ndcg@10", "popularity_recall@10", "ease_ndcg@10"):
        assert 0.0 <= logged[name] <= 1.0, name
    assert passed is (logged["model_recall@10"] > logged["popularity_recall@10"])
    assert logged["quality_gate_passed"] == float(passed)
    unreachable = evaluate.python_func(
        data=artifact(Dataset, tiny_data),
        model=trained,
        split="temporal",
        seed=7.0,
        min_recall_at_10=1.01,
        metrics=artifact(Metrics, tmp_path / "m2"),
    )
    assert unreachable is False


@pytest.mark.integration
def test_feast_steps_and_publish_on_the_real_database(
    pg_dsn: str, feature_repo_env: Path, tiny_data: Path, trained: Model, tmp_path: Path
) -> None:
    data = artifact(Dataset, tiny_data, "data")
    registry = artifact(Artifact, tmp_path / "registry", "registry")
    deployed = json.loads(feast_apply.python_func(data=data, registry=registry))
    assert f"feature view {schema.VIEW_USER_FEATURES}" in deployed
    assert (tmp_path / "registry").stat().st_size > 0
    assert all((feature_repo_env / "data" / name).is_file() for name in schema.DATA_FILES)

    (feature_repo_env / "data" / "registry.db").unlink()  # as in a fresh pod: only the artifact has it
    online = json.loads(materialize.python_func(data=data, registry=registry))
    assert online == {schema.VIEW_USER_FEATURES: 200, schema.VIEW_ITEM_FEATURES: 400}
    assert json.loads(materialize.python_func(data=data, registry=registry)) == online  # idempotent

    report = json.loads(publish.python_func(data=data, model=trained, registry=registry))
    assert report["model_version"] == report["live_model_version"] == trained.metadata["model_version"]
    assert report["item_vectors"]["written"] == 400


@pytest.mark.unit
def test_deploy_step_creates_then_leaves_the_inference_service(trained: Model, monkeypatch: pytest.MonkeyPatch) -> None:
    from test_manifests import FakeCustomObjects

    from recsys import deploy

    api = FakeCustomObjects()
    monkeypatch.setattr(deploy, "custom_objects_api", lambda: api)
    remote = artifact(Model, Path("/unused"), "model")
    remote.uri = "minio://mlpipeline/v2/artifacts/run/train/model"
    remote.metadata = dict(trained.metadata)
    arguments = {"model": remote, "name": "recommender", "namespace": "recsys", "image": "recsys:dev"}
    assert deploy_inference_service.python_func(**arguments) == "created"
    assert deploy_inference_service.python_func(**arguments) == "unchanged"
    stored = api.objects["recsys", "recommender"]
    env = stored["spec"]["predictor"]["containers"][0]["env"]
    assert {"name": "STORAGE_URI", "value": "s3://mlpipeline/v2/artifacts/run/train/model"} in env
    assert stored["metadata"]["annotations"]["recsys.io/model-version"] == trained.metadata["model_version"]
