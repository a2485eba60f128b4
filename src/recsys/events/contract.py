"""The body of POST /v1/events and its validation: `{"events": [{event_id, user_id, item_id, interaction_type,
timestamp?, rating?, quantity?}]}`, at most MAX_EVENTS per call, all or nothing.

Everything Postgres would reject (NUL, lone surrogates, over-long text) is rejected here, before any query, with
an error naming the event index and field. Whether an item exists is known only to the database (recsys.events.log
raises the same error type for it).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, ValidationError

from recsys import schema

MAX_EVENTS = 1000  # per call
MAX_BODY_BYTES = 1 << 20  # 1000 events of three 128-character ids and every field fit in ~0.6 MiB
MAX_ID_CHARS = 128
MAX_QUANTITY = 10_000
MIN_RATING, MAX_RATING = 1.0, 5.0  # stars, as in the data set
MAX_CLOCK_SKEW = timedelta(hours=1)  # a timestamp further ahead than this is a client bug, not an event
QUANTITY_TYPES = (schema.PURCHASE, schema.CART)
DEFAULT_QUANTITY = 1  # a purchase without a quantity bought one


class EventError(ValueError):
    """An event (or the batch) that cannot be accepted; `index` and `field` say where (HTTP 400)."""

    def __init__(self, message: str, index: int | None = None, field: str | None = None):
        where = "events" if index is None else f"events[{index}]"
        super().__init__(f"{where}{'.' + field if field else ''}: {message}")
        self.index = index
        self.field = field


def _no_nul(value: str) -> str:
    """Postgres text cannot hold NUL (pydantic itself rejects lone surrogates)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL characters")
    return value


def _aware(moment: datetime | None) -> datetime:
    """Naive timestamps are UTC; a missing one is now; one far in the future is rejected."""
    now = datetime.now(UTC)
    if moment is None:
        return now
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    if moment > now + MAX_CLOCK_SKEW:
        raise ValueError(f"more than {MAX_CLOCK_SKEW} in the future")
    return moment


Id = Annotated[str, Field(strict=True, min_length=1, max_length=MAX_ID_CHARS), AfterValidator(_no_nul)]
InteractionType = Literal[schema.INTERACTION_TYPES]  # type: ignore[valid-type]


class InteractionEvent(BaseModel):
    """One user event. `timestamp` defaults to now (UTC); `rating` (1..5) only and always on `rate`; `quantity`
    only on purchase (default 1) and cart."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id
    user_id: Id
    item_id: Id
    interaction_type: InteractionType
    timestamp: Annotated[datetime | None, AfterValidator(_aware)] = Field(default=None, validate_default=True)
    rating: Annotated[StrictFloat, Field(ge=MIN_RATING, le=MAX_RATING, allow_inf_nan=False)] | None = None
    quantity: Annotated[StrictInt, Field(ge=1, le=MAX_QUANTITY)] | None = None

    @property
    def moment(self) -> datetime:
        """The event time (the validator has filled and normalised it)."""
        assert self.timestamp is not None
        return self.timestamp


def _field_rule(event: InteractionEvent) -> tuple[str, str] | None:
    """The first cross-field rule the event breaks, as (field, message)."""
    kind = event.interaction_type
    if kind == schema.RATE and event.rating is None:
        return schema.RATING, f"required for {schema.RATE}"
    if kind != schema.RATE and event.rating is not None:
        return schema.RATING, f"only allowed for {schema.RATE}"
    if kind not in QUANTITY_TYPES and event.quantity is not None:
        return schema.QUANTITY, f"only allowed for {' and '.join(QUANTITY_TYPES)}"
    return None


def parse_event(raw: Any, index: int) -> InteractionEvent:
    """One JSON event -> InteractionEvent, or EventError naming the index and field."""
    if not isinstance(raw, dict):
        raise EventError(f"expected an object, got {type(raw).__name__}", index)
    if raw.get(schema.INTERACTION_TYPE) == schema.PURCHASE and raw.get(schema.QUANTITY) is None:
        raw = {**raw, schema.QUANTITY: DEFAULT_QUANTITY}
    try:
        event = InteractionEvent.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        field = ".".join(str(part) for part in error["loc"]) or None
        raise EventError(error["msg"].removeprefix("Value error, "), index, field) from None
    broken = _field_rule(event)
    if broken is not None:
        raise EventError(broken[1], index, broken[0])
    return event


def parse_event_batch(payload: Any) -> list[InteractionEvent]:
    """A whole body -> its events, all valid, or EventError for the first problem (nothing is accepted then)."""
    if not isinstance(payload, dict):
        raise EventError("the body must be a JSON object with an 'events' list")
    unknown = sorted(set(payload) - {"events"})
    if unknown:
        raise EventError(f"unknown top-level field {unknown[0]!r} (expected only 'events')")
    events = payload.get("events")
    if not isinstance(events, list):
        raise EventError("missing or not a list")
    if not events:
        raise EventError("empty")
    if len(events) > MAX_EVENTS:
        raise EventError(f"at most {MAX_EVENTS} per call, got {len(events)}")
    return [parse_event(raw, index) for index, raw in enumerate(events)]
