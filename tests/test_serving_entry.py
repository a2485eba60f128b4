"""`python -m serving` checks its model dir before it starts: a wrong path is one line and exit 2, not a server
that never becomes ready."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from recsys.config import get_settings

pytestmark = pytest.mark.unit


def test_missing_model_dir_exits_at_once_with_one_line(tmp_path: Path) -> None:
    typo = tmp_path / "TYPO"
    done = subprocess.run(
        [sys.executable, "-m", "serving", "--model-dir", str(typo), "--http_port", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert done.stderr.strip() == f"python -m serving: error: model dir {typo} does not exist"


def test_empty_default_store_names_the_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from serving.__main__ import main

    monkeypatch.setenv("RECSYS_HOME", str(tmp_path))
    monkeypatch.delenv("RECSYS_MODEL_DIR", raising=False)
    monkeypatch.delenv("RECSYS_MODELS_DIR", raising=False)
    get_settings.cache_clear()
    try:
        with pytest.raises(SystemExit) as exited:
            main(["--http_port", "1"])
    finally:
        get_settings.cache_clear()
    assert exited.value.code == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"python -m serving: error: model dir {tmp_path / 'models'} does not exist"
    ]
