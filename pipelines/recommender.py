"""The Kubeflow pipeline: every offline step of the recommender in one DAG.

generate -> [images, GPU, optional] -> include logged events -> feast apply -> materialize -> train -> evaluate
         -> quality gate (model beats popularity and min Recall@10) -> publish -> [deploy, optional]

The steps after generate form one sub-pipeline (`offline_steps`) that runs on either branch of the images
switch. Why not dsl.OneOf: kfp.local (2.17) cannot resolve a OneOf over artifacts, and the same DAG must run here
and on a cluster.

`recommender_pipeline` trains in the train step's pod; `build_pipeline(DistributedTraining(...))` (the CLI's
`--train-workers N`) builds the same DAG whose train step runs a Kubeflow Trainer TrainJob instead.
"""

# no `from __future__ import annotations`: kfp reads the real annotation objects
import json

from kfp import dsl, kubernetes
from kfp.dsl import Dataset, Input
from kfp.dsl.graph_component import GraphComponent
from kfp.dsl.pipeline_channel import PipelineChannel

from components.data import generate_data, generate_images
from components.events import include_events
from components.features import feast_apply, materialize
from components.model import evaluate, train, train_distributed
from components.serving import deploy_inference_service, publish
from components.settings import BASE_IMAGE
from recsys.contract import (
    DB_CLIENT_LABEL,
    DB_CLIENT_LABEL_VALUE,
    DEFAULT_IMAGE_MODEL,
    DEFAULT_N_INTERACTIONS,
    DEFAULT_N_ITEMS,
    DEFAULT_N_USERS,
    SERVED_MODEL_NAME,
)
from recsys.training_job import TRAINING_CLAIM, TRAINING_MOUNT, DistributedTraining, train_job_template

PIPELINE_NAME = "recsys-two-tower"
DB_SECRET_KEY = "dsn"  # key of the DSN in the Postgres Secret (manifests/base/secret-templates.yaml)
GPU_RESOURCE = "nvidia.com/gpu"


def _talks_to_postgres(task: dsl.PipelineTask, secret_name: str) -> dsl.PipelineTask:
    """The DSN comes from a Secret reference (no value in the YAML); the label opens the NetworkPolicy."""
    kubernetes.use_secret_as_env(task, secret_name=secret_name, secret_key_to_env={DB_SECRET_KEY: "RECSYS_PG_DSN"})
    kubernetes.add_pod_label(task, DB_CLIENT_LABEL, DB_CLIENT_LABEL_VALUE)
    return task


def _side_effecting(task: dsl.PipelineTask) -> dsl.PipelineTask:
    """Writes outside its artifacts: never skip it from cache; retry transient failures (DB, API server)."""
    return task.set_caching_options(False).set_retry(num_retries=2, backoff_duration="15s", backoff_factor=2.0)


def _train_step(
    training: DistributedTraining | None,
    dataset: PipelineChannel,
    split: str,
    epochs: int,
    seed: int,
    namespace: str,
) -> dsl.PipelineTask:
    """In the step's pod (training None), or a TrainJob whose spec is compiled into the pipeline; the same
    `model` output either way."""
    if training is None:
        trained = train(data=dataset, split=split, epochs=epochs, seed=seed)
        return trained.set_cpu_limit("4").set_memory_limit("8G").set_display_name("train two-tower")
    trained = train_distributed(
        data=dataset, split=split, epochs=epochs, seed=seed, namespace=namespace,
        job_template=json.dumps(train_job_template(training), sort_keys=True),
    )  # fmt: skip
    # this pod only copies files and waits; the TrainJob's pods do the training
    trained.set_cpu_limit("1").set_memory_limit("2G")
    trained.set_display_name(f"train two-tower (TrainJob: {training.workers} x {training.processes_per_worker})")
    kubernetes.mount_pvc(trained, pvc_name=TRAINING_CLAIM, mount_path=TRAINING_MOUNT)
    return trained


def build_pipeline(training: DistributedTraining | None = None) -> GraphComponent:
    """The pipeline; `training` set: the train step runs a Kubeflow Trainer TrainJob (recsys.training_job)."""

    @dsl.pipeline(name="recsys-offline-steps")
    def offline_steps(
        data: Input[Dataset],
        split: str,
        epochs: int,
        seed: int,
        min_recall_at_10: float,
        deploy: bool,
        service_name: str,
        namespace: str,
        serving_image: str,
        db_secret_name: str,
    ) -> None:
        """The logged user events merged in, feature store, training, evaluation and, behind the quality gate,
        publishing and deployment."""
        merged = _side_effecting(_talks_to_postgres(include_events(data=data), db_secret_name))
        merged.set_display_name("include logged events")
        dataset = merged.outputs["data_with_events"]
        applied = _side_effecting(_talks_to_postgres(feast_apply(data=dataset), db_secret_name))
        applied.set_display_name("feast apply")
        registry = applied.outputs["registry"]
        loaded = _side_effecting(_talks_to_postgres(materialize(data=dataset, registry=registry), db_secret_name))
        loaded.set_display_name("materialize online features")

        trained = _train_step(training, dataset, split, epochs, seed, namespace)
        evaluated = evaluate(
            data=dataset, model=trained.outputs["model"], split=split, seed=seed, min_recall_at_10=min_recall_at_10
        )
        evaluated.set_memory_limit("8G").set_display_name("evaluate vs baselines")

        with dsl.If(evaluated.outputs["Output"] == True, name="quality-gate-passed"):  # noqa: E712 (a DSL condition)
            published = _side_effecting(
                _talks_to_postgres(
                    publish(data=dataset, model=trained.outputs["model"], registry=registry), db_secret_name
                )
            ).after(loaded)
            published.set_display_name("publish vectors")
            with dsl.If(deploy == True, name="deploy-enabled"):  # noqa: E712
                deployed = deploy_inference_service(
                    model=trained.outputs["model"], name=service_name, namespace=namespace, image=serving_image
                ).after(published)
                _side_effecting(deployed).set_display_name("deploy InferenceService")

    @dsl.pipeline(name=PIPELINE_NAME, description="Two-tower recommender: data, Feast, training, gate, publish, KServe")
    def recommender_pipeline(
        n_users: int = DEFAULT_N_USERS,
        n_items: int = DEFAULT_N_ITEMS,
        n_interactions: int = DEFAULT_N_INTERACTIONS,
        seed: int = 42,
        data_source: str = "",
        with_images: bool = False,
        image_model: str = DEFAULT_IMAGE_MODEL,
        image_device: str = "auto",
        image_steps: int = 25,
        image_size: int = 512,
        image_limit: int = 0,
        gpu_node_selector: dict = {},  # noqa: B006 -- kfp reads parameter defaults from the signature
        gpu_tolerations: list = [],  # noqa: B006
        epochs: int = 20,
        split: str = "temporal",
        min_recall_at_10: float = 0.05,
        deploy: bool = True,
        service_name: str = SERVED_MODEL_NAME,
        namespace: str = "recsys",
        serving_image: str = BASE_IMAGE,
        db_secret_name: str = "recsys-postgres",
    ) -> None:
        """gpu_node_selector: e.g. {"nvidia.com/gpu.present": "true"}; gpu_tolerations: e.g.
        [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]. image_limit 0 = every item.
        data_source: a folder with the three parquet files to use instead of generating (the sizes are then unused)."""
        generated = generate_data(
            n_users=n_users, n_items=n_items, n_interactions=n_interactions, seed=seed, source=data_source
        )
        generated.set_display_name("generate data")
        rest = {
            "split": split,
            "epochs": epochs,
            "seed": seed,
            "min_recall_at_10": min_recall_at_10,
            "deploy": deploy,
            "service_name": service_name,
            "namespace": namespace,
            "serving_image": serving_image,
            "db_secret_name": db_secret_name,
        }

        with dsl.If(with_images == True, name="with-images"):  # noqa: E712
            images = generate_images(
                data=generated.outputs["data"],
                model=image_model,
                device=image_device,
                steps=image_steps,
                guidance=7.5,
                size=image_size,
                limit=image_limit,
                batch_size=4,
                seed=seed,
            )
            images.set_accelerator_type(GPU_RESOURCE).set_accelerator_limit(1).set_memory_limit("16G")
            images.set_display_name("product images (GPU)")
            kubernetes.add_node_selector_json(images, gpu_node_selector)
            kubernetes.add_toleration_json(images, gpu_tolerations)
            offline_steps(data=images.outputs["data_with_images"], **rest)
        with dsl.Else(name="without-images"):
            offline_steps(data=generated.outputs["data"], **rest)

    return recommender_pipeline


recommender_pipeline = build_pipeline()  # the default: in-pod training
