"""Step 1 and 2: the synthetic data set and (optionally, on a GPU) its product images."""

# no `from __future__ import annotations`: kfp reads the real annotation objects
from kfp import dsl
from kfp.dsl import Dataset, Input, Output

from components.settings import COMPONENT_OPTIONS


@dsl.component(**COMPONENT_OPTIONS)
def generate_data(
    n_users: int, n_items: int, n_interactions: int, seed: int, data: Output[Dataset], source: str = ""
) -> None:
    """Users, items and interactions as the three parquet files of schema.DATA_FILES in the `data` folder:
    synthetic, or copied from the folder `source` (a path this step can read) when one is given."""
    from pathlib import Path

    if source:
        import pyarrow.parquet as pq

        from components.staging import copy_data_files
        from recsys import schema

        copy_data_files(Path(source), Path(data.path))
        rows = {name: pq.ParquetFile(Path(data.path) / name).metadata.num_rows for name in schema.DATA_FILES}
        data.metadata.update({"source": source, **rows})
        return
    from recsys.data.generate import generate

    # int(): kfp.local can hand ints over as floats
    report = generate(
        n_users=int(n_users),
        n_items=int(n_items),
        n_interactions=int(n_interactions),
        seed=int(seed),
        out=Path(data.path),
    )
    data.metadata.update(
        {
            "n_users": report.n_users,
            "n_items": report.n_items,
            "n_interactions": report.n_interactions,
            "preferred_share": report.preferred_share,
            "uniform_share": report.uniform_share,
        }
    )


@dsl.component(**COMPONENT_OPTIONS)
def generate_images(
    data: Input[Dataset],
    model: str,
    device: str,
    steps: int,
    guidance: float,
    size: int,
    limit: int,
    batch_size: int,
    seed: int,
    data_with_images: Output[Dataset],
) -> None:
    """A copy of `data` whose items' img_link point at Stable Diffusion images stored in the same artifact.

    limit 0 renders every item. Links are rewritten from the pod's local path to the artifact URI so they stay
    valid after the step (locally both are the same path).
    """
    from pathlib import Path

    import pandas as pd

    from components.staging import copy_data_files
    from recsys import schema
    from recsys.images import generate_images as render

    out = Path(data_with_images.path)
    copy_data_files(Path(data.path), out)
    report = render(
        items_path=out / schema.ITEMS_FILE,
        out_dir=out / "images",
        model=model,
        device=device,
        steps=int(steps),
        guidance=float(guidance),
        size=int(size),
        limit=int(limit) or None,
        batch_size=int(batch_size),
        seed=int(seed),
    )
    items_file = out / schema.ITEMS_FILE
    items = pd.read_parquet(items_file)
    local_prefix, uri_prefix = str(out.resolve()), data_with_images.uri.rstrip("/")
    if local_prefix != uri_prefix:
        items[schema.IMG_LINK] = items[schema.IMG_LINK].str.replace(local_prefix, uri_prefix, regex=False)
        items.to_parquet(items_file)
    data_with_images.metadata.update(
        {"images_generated": report.generated, "images_skipped": report.skipped, "seconds": report.seconds}
    )
