"""Writing a data set's parquet files as one set: the generator and the importers share it."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd


def write_atomically(out: Path, frames: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """All files as temporaries first, then renames: a failure leaves no partial or mixed set behind."""
    temporaries: dict[str, Path] = {}
    try:
        for name, frame in frames.items():
            temporaries[name] = out / f".{name}.{os.getpid()}.tmp"
            frame.to_parquet(temporaries[name], index=False)
    except BaseException:
        for tmp in temporaries.values():
            tmp.unlink(missing_ok=True)
        raise
    paths = {}
    for name, tmp in temporaries.items():
        paths[name] = out / name
        os.replace(tmp, paths[name])
    return paths
