"""Steps 7 and 8: publish the model's vectors (pgvector + Feast) and point the InferenceService at it.
Both have side effects: no caching; both are idempotent (upserts by model_version; create-or-patch)."""

# no `from __future__ import annotations`: kfp reads the real annotation objects
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Model

from components.settings import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def publish(data: Input[Dataset], model: Input[Model], registry: Input[Artifact]) -> str:
    """Item vectors -> pgvector (HNSW), user/item/text vectors and batch top-k -> Feast; one model_version."""
    import json
    from dataclasses import asdict
    from pathlib import Path

    from components.staging import restore_registry, stage_into_feature_repo
    from recsys.publish import publish as publish_model

    data_dir = stage_into_feature_repo(Path(data.path))
    restore_registry(Path(registry.path))
    report = publish_model(Path(model.path), data_dir=data_dir)
    return json.dumps(asdict(report), default=str)


@dsl.component(**COMPONENT_OPTIONS)
def deploy_inference_service(model: Input[Model], name: str, namespace: str, image: str) -> str:
    """Create or patch the KServe InferenceService `name` to serve `model`; returns what was done."""
    from recsys.deploy import deploy_inference_service as deploy

    result = deploy(name, namespace, image, model.uri, model_version=model.metadata.get("model_version"))
    return result.action
