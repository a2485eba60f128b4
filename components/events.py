"""The data set plus the user events logged since: what the rest of the DAG trains, evaluates and publishes.

Reads Postgres (the event log) every run, so it is never cached; merging is idempotent (event_id becomes
interaction_id).
"""

# no `from __future__ import annotations`: kfp reads the real annotation objects
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.settings import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def include_events(data: Input[Dataset], data_with_events: Output[Dataset]) -> None:
    """A copy of `data` with the event log merged into its interactions (and new users into its users)."""
    from dataclasses import asdict
    from pathlib import Path

    from components.staging import copy_data_files
    from recsys.events.export import merge_events_into_dataset

    out = Path(data_with_events.path)
    copy_data_files(Path(data.path), out)  # img_link keeps pointing at the image step's own artifact
    report = merge_events_into_dataset(out)
    data_with_events.metadata.update(asdict(report))
