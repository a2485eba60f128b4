"""Kubeflow Pipelines components: one lightweight component per step, each a thin wrapper over recsys.

Modules: data (generate_data, generate_images), features (feast_apply, materialize), model (train, evaluate),
serving (publish, deploy_inference_service); staging holds the plain glue they share. Nothing is imported
here: component bodies import `components.staging` at run time, where kfp.dsl has no `component` decorator.
"""
