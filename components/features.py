"""Steps 3 and 4: register the Feast repo and load the online store. Both write to Postgres: no caching,
and both are idempotent (apply converges to the repo's definitions; materialize upserts).

The file registry `feast apply` writes travels as an artifact: on a cluster each step is a fresh pod.
"""

# no `from __future__ import annotations`: kfp reads the real annotation objects
from kfp import dsl
from kfp.dsl import Artifact, Dataset, Input, Output

from components.settings import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def feast_apply(data: Input[Dataset], registry: Output[Artifact]) -> str:
    """`feast apply` on the feature repo (RECSYS_FEATURE_REPO) with `data` staged as its file sources."""
    import json
    from pathlib import Path

    from components.staging import save_registry, stage_into_feature_repo
    from recsys import feature_store

    stage_into_feature_repo(Path(data.path))
    deployed = feature_store.apply()
    save_registry(Path(registry.path))
    return json.dumps(deployed)


@dsl.component(**COMPONENT_OPTIONS)
def materialize(data: Input[Dataset], registry: Input[Artifact]) -> str:
    """Load the user and item features of `data` into the Feast online store (Postgres)."""
    import json
    from pathlib import Path

    from components.staging import restore_registry, stage_into_feature_repo
    from recsys import feature_store

    stage_into_feature_repo(Path(data.path))
    restore_registry(Path(registry.path))
    return json.dumps(feature_store.materialize())
