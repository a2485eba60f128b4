"""Product images: the real diffusers code path on CPU with a tiny random Stable Diffusion pipeline.

No weights can be downloaded here, so the pipeline is built from configs (tests/sd_tiny.py) and renders noise at
64x64 with 2 steps; the tests check files, seeding, batching, resume, img_link and errors. The CUDA fp16 path
(device auto/cuda on a GPU) is not exercised here: this machine has no GPU.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from diffusers import StableDiffusionPipeline
from PIL import Image
from sd_tiny import tiny_pipeline
from typer.testing import CliRunner

from recsys import schema
from recsys.cli import app
from recsys.images import (
    NEGATIVE_PROMPT,
    STYLE_SUFFIX,
    ImageError,
    generate_images,
    image_file_name,
    item_prompt,
    item_seed,
    resolve_device,
)

TINY = {"device": "cpu", "steps": 2, "size": 64}
N_ITEMS = 5


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread() -> Iterator[None]:
    """The 2 shared cores are busy with other work: 2 torch threads fighting for them run ~10x slower than 1."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def pipeline() -> StableDiffusionPipeline:
    return tiny_pipeline()


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, pipeline: StableDiffusionPipeline) -> Path:
    """The tiny pipeline saved as a diffusers folder, as `--model DIR` would get it."""
    folder = tmp_path_factory.mktemp("tiny-sd")
    pipeline.save_pretrained(folder)
    return folder


def write_items(path: Path, n: int = N_ITEMS) -> Path:
    """A small items parquet with every item column of the schema, in the schema's dtypes."""
    items = pd.DataFrame(
        {
            schema.ITEM_ID: [f"P{i:05d}" for i in range(n)],
            schema.PRODUCT_NAME: [f"Aurora Wireless Headphones {i}" for i in range(n)],
            schema.CATEGORY: ["Electronics|Audio|Headphones"] * n,
            schema.ABOUT_PRODUCT: ["Noise cancelling over-ear headphones. 30 hours of battery."] * n,
            schema.ACTUAL_PRICE: np.linspace(10, 100, n),
            schema.DISCOUNTED_PRICE: np.linspace(9, 90, n),
            schema.DISCOUNT_PERCENTAGE: [10.0] * n,
            schema.RATING: [4.5] * n,
            schema.RATING_COUNT: list(range(n)),
            schema.ARRIVAL_DATE: pd.date_range("2026-01-01", periods=n, tz="UTC"),
            schema.STOCK_QUANTITY: [3] * n,
            schema.IMG_LINK: ["https://example.com/placeholder.png"] * n,
            schema.PRODUCT_LINK: [f"https://example.com/p/{i}" for i in range(n)],
        }
    ).astype(schema.ITEM_DTYPES)
    items.to_parquet(path)
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path)).astype(int)


# ----------------------------------------------------------------------------------------- pure helpers
@pytest.mark.unit
def test_prompt_has_name_leaf_trimmed_description_and_style() -> None:
    long_about = "Soft breathable cotton. " + " ".join(f"word{i}" for i in range(50))
    prompt = item_prompt("Classic Tee", "Fashion|Men|T-Shirts", long_about)
    assert prompt == f"Classic Tee, T-Shirts, Soft breathable cotton, {STYLE_SUFFIX}"
    assert item_prompt("Lamp") == f"Lamp, {STYLE_SUFFIX}"
    assert "word30" not in item_prompt("X", "", " ".join(f"word{i}" for i in range(50)))
    assert "white background" in STYLE_SUFFIX and "watermark" in NEGATIVE_PROMPT


@pytest.mark.unit
def test_item_seed_is_stable_across_processes_and_differs_per_item() -> None:
    # a fixed value: Python's salted hash() would change it from one process to the next
    assert item_seed(42, "P00001") == item_seed(42, "P00001") == 3268107067061063706
    assert item_seed(42, "P00002") != item_seed(42, "P00001") != item_seed(43, "P00001")
    assert 0 <= item_seed(0, "") < 2**63


@pytest.mark.unit
def test_file_names_are_safe_and_unique() -> None:
    assert image_file_name("P00001") == "P00001.png"
    unsafe = [image_file_name(i) for i in ("a b", "a_b", "../etc/passwd", ".hidden", "é")]
    assert len(set(unsafe)) == len(unsafe)
    for name in unsafe:
        assert "/" not in name and " " not in name and not name.startswith(".") and name.endswith(".png")
        assert name.isascii()


@pytest.mark.unit
def test_device_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto") == ("cpu", torch.float32)
    assert resolve_device("cpu") == ("cpu", torch.float32)
    with pytest.raises(ImageError, match="no CUDA GPU"):
        resolve_device("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == ("cuda", torch.float16)
    with pytest.raises(ImageError, match=r"unknown device 'tpu'.*auto, cpu, cuda"):
        resolve_device("tpu")


# ----------------------------------------------------------------------------------------- generation
@pytest.mark.unit
def test_generates_valid_pngs_writes_img_link_and_resumes(tmp_path: Path, pipeline: StableDiffusionPipeline) -> None:
    items_path = write_items(tmp_path / schema.ITEMS_FILE)
    before = pd.read_parquet(items_path)
    out = tmp_path / "images"

    report = generate_images(items_path, out, batch_size=2, pipeline=pipeline, **TINY)

    assert (report.generated, report.skipped, report.out_dir) == (N_ITEMS, 0, out)
    assert report.seconds > 0
    files = sorted(out.iterdir())
    assert [f.name for f in files] == [f"P{i:05d}.png" for i in range(N_ITEMS)]  # no partial files left
    for f in files:
        with Image.open(f) as image:
            assert (image.format, image.size, image.mode) == ("PNG", (64, 64), "RGB")
            assert np.asarray(image).std() > 0  # not a blank (e.g. safety-checker black) image
    after = pd.read_parquet(items_path)
    assert after[schema.IMG_LINK].tolist() == [str(f.resolve()) for f in files]
    assert dict(after.dtypes.astype(str)) == dict(before.dtypes.astype(str)) == schema.ITEM_DTYPES
    pd.testing.assert_frame_equal(after.drop(columns=schema.IMG_LINK), before.drop(columns=schema.IMG_LINK))

    mtimes = [f.stat().st_mtime_ns for f in files]
    rerun = generate_images(items_path, out, batch_size=2, pipeline=pipeline, **TINY)
    assert (rerun.generated, rerun.skipped) == (0, N_ITEMS)
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    pd.testing.assert_frame_equal(pd.read_parquet(items_path), after)


@pytest.mark.unit
def test_limit_renders_the_first_items_and_links_only_those(tmp_path: Path, pipeline: StableDiffusionPipeline) -> None:
    items_path = write_items(tmp_path / schema.ITEMS_FILE)
    report = generate_images(items_path, tmp_path / "images", limit=2, pipeline=pipeline, **TINY)
    assert (report.generated, report.skipped) == (2, 0)
    assert sorted(f.name for f in (tmp_path / "images").iterdir()) == ["P00000.png", "P00001.png"]
    links = pd.read_parquet(items_path)[schema.IMG_LINK].tolist()
    assert links[:2] == [str((tmp_path / "images" / f"P0000{i}.png").resolve()) for i in range(2)]
    assert links[2:] == ["https://example.com/placeholder.png"] * (N_ITEMS - 2)  # untouched rows keep theirs


@pytest.mark.unit
def test_same_seed_same_pixels_batched_or_not(tmp_path: Path, pipeline: StableDiffusionPipeline) -> None:
    items_path = write_items(tmp_path / schema.ITEMS_FILE)
    runs = {
        "one_by_one": {"batch_size": 1, "seed": 7},
        "one_by_one_again": {"batch_size": 1, "seed": 7},
        "batched": {"batch_size": 3, "seed": 7},
        "other_seed": {"batch_size": 1, "seed": 8},
    }
    for name, kwargs in runs.items():
        generate_images(items_path, tmp_path / name, pipeline=pipeline, **TINY, **kwargs)

    for i in range(N_ITEMS):
        name = f"P{i:05d}.png"
        reference = pixels(tmp_path / "one_by_one" / name)
        np.testing.assert_array_equal(pixels(tmp_path / "one_by_one_again" / name), reference)
        # a batch changes the float summation order inside the UNet: at most one 8-bit level on a few pixels
        batched_diff = np.abs(pixels(tmp_path / "batched" / name) - reference)
        assert batched_diff.max() <= 1 and (batched_diff > 0).mean() < 0.001
        assert np.abs(pixels(tmp_path / "other_seed" / name) - reference).mean() > 5
    assert np.abs(pixels(tmp_path / "one_by_one" / "P00000.png") - reference).mean() > 5  # items differ


@pytest.mark.unit
def test_loads_a_local_diffusers_folder(tmp_path: Path, model_dir: Path) -> None:
    items_path = write_items(tmp_path / schema.ITEMS_FILE, n=2)
    report = generate_images(items_path, tmp_path / "images", model=str(model_dir), **TINY)
    assert report.generated == 2
    assert all(Image.open(f).size == (64, 64) for f in (tmp_path / "images").iterdir())


@pytest.mark.unit
def test_works_on_the_generated_catalogue(tmp_path: Path, tiny_data: Path, pipeline: StableDiffusionPipeline) -> None:
    items_path = tmp_path / schema.ITEMS_FILE
    shutil.copy(tiny_data / schema.ITEMS_FILE, items_path)
    before = pd.read_parquet(items_path)
    report = generate_images(items_path, tmp_path / "images", limit=3, batch_size=3, pipeline=pipeline, **TINY)
    after = pd.read_parquet(items_path)
    assert report.generated == 3
    assert after[schema.IMG_LINK].head(3).tolist() == sorted(str(f.resolve()) for f in (tmp_path / "images").iterdir())
    assert after[schema.IMG_LINK].iloc[3:].equals(before[schema.IMG_LINK].iloc[3:])
    pd.testing.assert_frame_equal(after.drop(columns=schema.IMG_LINK), before.drop(columns=schema.IMG_LINK))
    assert after.dtypes.equals(before.dtypes)


# ----------------------------------------------------------------------------------------- errors
@pytest.mark.unit
@pytest.mark.parametrize(
    ("model", "message"),
    [
        ("/nonexistent/sd-weights", r"'/nonexistent/sd-weights' is not a diffusers .*--model DIR"),
        ("recsys-tests/no-such-model", r"cannot load .*'recsys-tests/no-such-model'.*hf download .*--model DIR"),
    ],
)
def test_unreachable_model_is_a_clear_error(tmp_path: Path, model: str, message: str) -> None:
    assert os.environ["HF_HUB_OFFLINE"] == "1"  # set by conftest before huggingface_hub is imported
    items_path = write_items(tmp_path / schema.ITEMS_FILE)
    with pytest.raises(ImageError, match=message):
        generate_images(items_path, tmp_path / "images", model=model, **TINY)
    assert not (tmp_path / "images").exists()


@pytest.mark.unit
def test_default_model_error_names_its_hub_repo(tmp_path: Path) -> None:
    items_path = write_items(tmp_path / schema.ITEMS_FILE, n=1)
    with pytest.raises(ImageError, match="hf download stable-diffusion-v1-5/stable-diffusion-v1-5"):
        generate_images(items_path, tmp_path / "images", **TINY)


@pytest.mark.unit
def test_bad_input_is_a_clear_error_and_writes_nothing(tmp_path: Path, pipeline: StableDiffusionPipeline) -> None:
    out = tmp_path / "images"
    empty = tmp_path / "empty.parquet"
    pd.DataFrame({c: pd.Series(dtype=d) for c, d in schema.ITEM_DTYPES.items()}).to_parquet(empty)
    with pytest.raises(ImageError, match="has no items"):
        generate_images(empty, out, pipeline=pipeline, **TINY)
    with pytest.raises(ImageError, match="does not exist"):
        generate_images(tmp_path / "missing.parquet", out, pipeline=pipeline, **TINY)
    (tmp_path / "not.parquet").write_text("item_id\nP1\n")
    with pytest.raises(ImageError, match="not a readable parquet"):
        generate_images(tmp_path / "not.parquet", out, pipeline=pipeline, **TINY)
    pd.DataFrame({schema.ITEM_ID: ["P1"]}).to_parquet(tmp_path / "no_name.parquet")
    with pytest.raises(ImageError, match=f"lacks column.*{schema.PRODUCT_NAME}"):
        generate_images(tmp_path / "no_name.parquet", out, pipeline=pipeline, **TINY)

    items_path = write_items(tmp_path / schema.ITEMS_FILE)
    with pytest.raises(ImageError, match="unknown device 'tpu'"):
        generate_images(items_path, out, pipeline=pipeline, **{**TINY, "device": "tpu"})
    with pytest.raises(ImageError, match="multiple of 8"):
        generate_images(items_path, out, pipeline=pipeline, **{**TINY, "size": 60})
    with pytest.raises(ImageError, match="steps must be >= 1"):
        generate_images(items_path, out, pipeline=pipeline, **{**TINY, "steps": 0})
    assert not out.exists()


# ----------------------------------------------------------------------------------------- CLI
@pytest.mark.unit
def test_cli_help_documents_every_flag() -> None:
    result = CliRunner().invoke(app, ["images", "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0
    # each option reads "  --flag <type>  help text [default: ...]", its text maybe wrapped onto indented lines
    rows: list[list[str]] = []
    for line in result.output.splitlines():
        if line.startswith("  --"):
            rows.append(line.split(maxsplit=2))
        elif rows and line.startswith("      "):
            rows[-1][-1] += " " + line.strip()
    help_texts = {flag: re.sub(r"\[default: .*\]", "", text).strip() for flag, _metavar, text in rows}
    flags = ["--items", "--out", "--model", "--device", "--steps", "--guidance", "--size", "--limit"]
    for flag in [*flags, "--batch-size", "--seed"]:
        assert len(help_texts[flag].split()) >= 4, f"{flag}: {help_texts.get(flag)!r}"


@pytest.mark.unit
def test_cli_renders_with_a_local_model_and_fails_cleanly(tmp_path: Path, model_dir: Path) -> None:
    items_path = write_items(tmp_path / schema.ITEMS_FILE, n=2)
    out = tmp_path / "images"
    args = ["images", "--items", str(items_path), "--out", str(out), "--model", str(model_dir)]
    tiny_flags = ["--device", "cpu", "--steps", "2", "--size", "64", "--batch-size", "2", "--seed", "3"]
    runner = CliRunner()

    result = runner.invoke(app, [*args, *tiny_flags, "--guidance", "5", "--limit", "1"])
    assert result.exit_code == 0, result.output
    assert "1 images generated, 0 already there" in result.output
    assert [f.name for f in out.iterdir()] == ["P00000.png"]

    for bad, message in [(["--device", "tpu"], "unknown device 'tpu'"), (["--steps", "0"], "steps must be >= 1")]:
        result = runner.invoke(app, [*args, *tiny_flags, *bad])
        assert result.exit_code == 2
        assert message in result.output and "Traceback" not in result.output
