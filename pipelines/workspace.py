"""Which feature repo a local pipeline run writes its data set into, so a user's own files are never replaced.

The pipeline stages its data set into the feature repo's data/ (the Feast file sources read it there). If that
folder holds parquet files the pipeline did not write (the user's own, or `recsys generate`'s), a run uses a
copy of the repo under RECSYS_HOME instead, unless told to overwrite. Files a run wrote are recorded (sha256 in
PIPELINE_FILES_RECORD), so the next run may replace them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from recsys import schema
from recsys.config import get_settings

PIPELINE_FILES_RECORD = ".written-by-pipeline.json"
RUN_REPO_FOLDER = "pipeline-feature-repo"  # under RECSYS_HOME
FEAST_REGISTRY_FILE = "registry.db"


@dataclass(frozen=True)
class Workspace:
    feature_repo: Path  # the repo the run stages its data into and applies
    user_files_kept: list[Path]  # the user's files that made the run use a copy (empty: the repo itself)


def choose(overwrite: bool) -> Workspace:
    """The configured feature repo, or a copy under RECSYS_HOME when its data/ holds files the pipeline did not
    write (and `overwrite` is off)."""
    settings = get_settings()
    repo = settings.feature_repo
    theirs = [] if overwrite else _files_not_written_by_pipeline(repo / "data")
    if not theirs:
        return Workspace(repo, [])
    copy = settings.home / RUN_REPO_FOLDER
    ignore = shutil.ignore_patterns("*.parquet", FEAST_REGISTRY_FILE, "images", PIPELINE_FILES_RECORD)
    shutil.copytree(repo, copy, ignore=ignore, dirs_exist_ok=True)
    return Workspace(copy, theirs)


def use(workspace: Workspace) -> dict[str, str]:
    """Point this process (and the kfp.local steps and predictor it starts) at the workspace's repo; returns
    the environment it set."""
    env = {"RECSYS_FEATURE_REPO": str(workspace.feature_repo), "RECSYS_DATA_DIR": str(workspace.feature_repo / "data")}
    os.environ.update(env)
    get_settings.cache_clear()
    return env


def record_run(workspace: Workspace, user_repo: Path) -> None:
    """After a run: note the files it wrote (so the next run may replace them); a user repo that was never
    applied gets the run's Feast registry, so `recsys recommend` there reads the views the run published."""
    data_dir = workspace.feature_repo / "data"
    record = {name: _sha256(data_dir / name) for name in schema.DATA_FILES if (data_dir / name).is_file()}
    (data_dir / PIPELINE_FILES_RECORD).write_text(json.dumps(record, indent=2))
    user_registry = user_repo / "data" / FEAST_REGISTRY_FILE
    if workspace.user_files_kept and not user_registry.exists() and (data_dir / FEAST_REGISTRY_FILE).is_file():
        user_registry.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data_dir / FEAST_REGISTRY_FILE, user_registry)


def _files_not_written_by_pipeline(data_dir: Path) -> list[Path]:
    record_file = data_dir / PIPELINE_FILES_RECORD
    record = json.loads(record_file.read_text()) if record_file.is_file() else {}
    present = [data_dir / name for name in schema.DATA_FILES if (data_dir / name).is_file()]
    return [path for path in present if record.get(path.name) != _sha256(path)]


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
