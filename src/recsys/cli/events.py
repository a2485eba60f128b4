"""`recsys events add|load|export`: send user events (to a running predictor with --url, else in this process,
over the same code the predictor runs) and merge the event log into a data set for retraining."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from recsys import schema
from recsys.cli.output import console, fail
from recsys.config import get_settings

commands = typer.Typer(
    name="events", help="User events: send them, or merge the log into a data set.", no_args_is_help=True
)

PredictorUrl = Annotated[str | None, typer.Option(help="send to a running predictor (http://host:port) instead")]
HTTP_TIMEOUT_S = 30.0
# columns a file may carry; interaction_id stands in for event_id (an interactions file loads as is)
FILE_COLUMNS = ("event_id", schema.USER_ID, schema.ITEM_ID, schema.INTERACTION_TYPE, schema.TIMESTAMP,
                schema.RATING, schema.QUANTITY)  # fmt: skip


@commands.command("add")
def add_cmd(
    user_id: Annotated[str, typer.Option(help="who (an unknown id becomes a new user)")],
    item_id: Annotated[str, typer.Option(help="which item of the published catalogue")],
    kind: Annotated[str, typer.Option("--type", help=" | ".join(schema.INTERACTION_TYPES))],
    event_id: Annotated[str | None, typer.Option(help="idempotency key [default: a new UUID]")] = None,
    rating: Annotated[float | None, typer.Option(help="stars 1..5 (for rate)")] = None,
    quantity: Annotated[int | None, typer.Option(help="for purchase (default 1) and cart")] = None,
    timestamp: Annotated[str | None, typer.Option(help="event time, ISO 8601 [default: now]")] = None,
    url: PredictorUrl = None,
) -> None:
    """Record one event; prints {"accepted": n, "duplicates": m}."""
    event: dict[str, Any] = {
        "event_id": event_id or uuid.uuid4().hex,
        schema.USER_ID: user_id,
        schema.ITEM_ID: item_id,
        schema.INTERACTION_TYPE: kind,
    }
    extra = {schema.RATING: rating, schema.QUANTITY: quantity, schema.TIMESTAMP: timestamp}
    event.update({key: value for key, value in extra.items() if value is not None})
    console.print_json(json.dumps(_send(_sender(url), [event], first_row=None)))


@commands.command("load")
def load_cmd(
    file: Annotated[Path, typer.Argument(help="a .parquet or .csv file with one event per row", exists=True)],
    url: PredictorUrl = None,
    batch_size: Annotated[int, typer.Option(min=1, max=1000, help="events per call (each call all or nothing)")] = 1000,
) -> None:
    """Send every row of a file (columns event_id or interaction_id, user_id, item_id, interaction_type, and
    optional timestamp, rating, quantity) in calls of --batch-size; replaying a file only counts duplicates."""
    rows = _read_events(file)
    if not rows:
        fail(f"{file}: no events")
    send = _sender(url)
    totals = {"accepted": 0, "duplicates": 0}
    for start in range(0, len(rows), batch_size):
        answer = _send(send, rows[start : start + batch_size], first_row=start)
        for key in totals:
            totals[key] += answer[key]
    console.print_json(json.dumps(totals))


@commands.command("export")
def export_cmd(
    data: Annotated[Path | None, typer.Option(help="data set folder [default: RECSYS_DATA_DIR]")] = None,
) -> None:
    """Merge the event log into a data set's interactions (and users) files, in place; idempotent.
    `recsys train` does this itself before training."""
    report = merge_event_log(data or get_settings().data_dir)
    console.print_json(json.dumps(report))


def merge_event_log(data_dir: Path) -> dict[str, int]:
    """merge_events_into_dataset for the CLI: bad folders exit 2, an unreachable database exits 1."""
    from dataclasses import asdict

    from recsys.db import DatabaseError
    from recsys.events.export import merge_events_into_dataset

    missing = [name for name in schema.DATA_FILES if not (Path(data_dir) / name).is_file()]
    if missing:
        fail(f"{data_dir} lacks {', '.join(missing)}")
    try:
        return asdict(merge_events_into_dataset(Path(data_dir)))
    except DatabaseError as exc:
        fail(f"cannot read the event log: {exc} (`recsys train --no-events` trains without it)", code=1)


def _read_events(file: Path) -> list[dict[str, Any]]:
    import pandas as pd

    suffix = file.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        fail(f"{file}: expected a .parquet or .csv file")
    frame = pd.read_parquet(file) if suffix == ".parquet" else pd.read_csv(file, dtype=str, keep_default_na=False)
    if "event_id" not in frame.columns and schema.INTERACTION_ID in frame.columns:
        frame = frame.rename(columns={schema.INTERACTION_ID: "event_id"})
    missing = [c for c in FILE_COLUMNS[:4] if c not in frame.columns]
    if missing:
        fail(f"{file}: missing column(s) {', '.join(missing)}")
    frame = frame[[c for c in FILE_COLUMNS if c in frame.columns]]
    if schema.TIMESTAMP in frame.columns and pd.api.types.is_datetime64_any_dtype(frame[schema.TIMESTAMP]):
        frame[schema.TIMESTAMP] = frame[schema.TIMESTAMP].map(lambda t: None if pd.isna(t) else t.isoformat())
    cells = frame.astype(object).where(frame.notna(), None)
    return [_typed(row) for row in cells.to_dict("records")]


def _typed(row: dict[str, Any]) -> dict[str, Any]:
    """A row as JSON values: empty cells left out (they take the contract's defaults), numbers typed."""
    out = {key: value for key, value in row.items() if value is not None and value != ""}
    if schema.RATING in out:
        out[schema.RATING] = float(out[schema.RATING])
    if schema.QUANTITY in out:
        out[schema.QUANTITY] = int(float(out[schema.QUANTITY]))
    return out


Sender = Callable[[list[dict[str, Any]]], dict[str, int]]


def _sender(url: str | None) -> Sender:
    """Where events go: the predictor at `url`, or this process (one ingest for the whole command)."""
    if url is not None:
        return lambda events: _post(url, events)
    from recsys.events.ingest import UNAVAILABLE, EventIngest

    ingest = EventIngest.in_process()

    def here(events: list[dict[str, Any]]) -> dict[str, int]:
        try:
            result = ingest.ingest({"events": events})
        except UNAVAILABLE as exc:
            fail(f"events not recorded: {exc}", code=1)
        if not ingest.flush_feast():
            console.print("warning: the Feast mirror did not catch up in time (the event log has every event)")
        return result.as_response()

    return here


def _send(send: Sender, events: list[dict[str, Any]], first_row: int | None) -> dict[str, int]:
    """One all-or-nothing call; a rejected event exits 2, naming its file row when loading a file."""
    from recsys.events.contract import EventError

    try:
        return send(events)
    except EventError as exc:
        if first_row is None or exc.index is None:
            fail(str(exc))
        accepted = f"; rows before {first_row} were accepted" if first_row else ""
        fail(f"row {first_row + exc.index} of the file: {exc}{accepted}")


def _post(url: str, events: list[dict[str, Any]]) -> dict[str, int]:
    import httpx

    from recsys.contract import EVENTS_PATH
    from recsys.events.contract import EventError

    try:
        response = httpx.post(url.rstrip("/") + EVENTS_PATH, json={"events": events}, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {type(exc).__name__}", code=1)
    if response.status_code == 400:
        body = response.json()
        raise EventError(body["error"].split(": ", 1)[-1], body.get("index"), body.get("field"))
    if response.status_code != 200:
        fail(f"{response.status_code}: {response.text}", code=1)
    return response.json()
