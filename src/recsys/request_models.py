"""Request models of the online path, and the one place where raw JSON instances are validated.

An instance's kind is told by its keys: `user_id` / `user` ask for recommendations, `{"query": ...}` for
semantic search (personalised with a `user_id`), `{"item_id": ...}` for similar items (see INSTANCE_KINDS).

Limits (documented in serving/README.md): k in 1..MAX_K, at most MAX_INSTANCES per call, at most MAX_QUERIES
search queries and MAX_QUERY_CHARS_PER_REQUEST query characters per call (encoding them is the costly part of
search), ids and profile strings bounded so one request cannot make the server allocate or hash unbounded text.
Every string must be storable: Postgres text cannot hold NUL and UTF-8 cannot encode a lone surrogate, so both
are a 400 here, before any query (a micro-batch is never failed by one member's input).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictInt,
    StrictStr,
    ValidationError,
    model_validator,
)

MAX_K = 100
MAX_INSTANCES = 64
MAX_ID_CHARS = 128
MAX_PREFERENCES_CHARS = 1024
MAX_SHORT_CHARS = 32
MAX_QUERY_CHARS = 512  # a search query; MiniLM reads at most 256 word pieces anyway
MAX_QUERIES = 16  # search instances per call
MAX_QUERY_CHARS_PER_REQUEST = 2048  # ~0.15 s of query encoding on one core: big searches cannot starve others
DEFAULT_K = 10

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # NUL, or a surrogate code point (always lone in a str)


def storable(text: str) -> str:
    """`text` unchanged, or ValueError when Postgres (NUL) or a UTF-8 encoder (lone surrogate) would reject it."""
    found = _UNSTORABLE.search(text)
    if found is not None:
        what = "NUL characters" if found.group() == "\x00" else "lone surrogates (invalid Unicode)"
        raise ValueError(f"must not contain {what}")
    return text


IdText = Annotated[StrictStr, Field(min_length=1, max_length=MAX_ID_CHARS), AfterValidator(storable)]
ShortText = Annotated[StrictStr, Field(min_length=1, max_length=MAX_SHORT_CHARS), AfterValidator(storable)]


class RequestError(ValueError):
    """A request that cannot be served as sent; the message names the offending field (HTTP 400)."""


def check_id(value: object, where: str) -> str:
    """An id from outside pydantic (V2 inputs, URL paths): a storable string of 1..MAX_ID_CHARS, else RequestError."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS:
        raise RequestError(f"{where}: expected a string of 1..{MAX_ID_CHARS} characters")
    try:
        return storable(value)
    except ValueError as exc:
        raise RequestError(f"{where}: {exc}") from None


class UserProfile(BaseModel):
    """What a new user tells us about themselves; every field is optional."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    preferences: Annotated[StrictStr, Field(max_length=MAX_PREFERENCES_CHARS), AfterValidator(storable)] | None = None
    age: Annotated[StrictInt, Field(ge=0, le=130)] | None = None
    gender: ShortText | None = None

    def is_empty(self) -> bool:
        return self.preferences is None and self.age is None and self.gender is None


class RequestContext(BaseModel):
    """When and where the request happens; drives the availability and contextual filters."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timestamp: datetime | None = None  # ISO 8601; the offset, if any, sets local weekday/hour; default now (UTC)
    device: ShortText | None = None  # e.g. mobile, desktop, tablet
    season: ShortText | None = None  # e.g. winter, spring, summer, autumn

    def moment(self) -> datetime:
        if self.timestamp is None:
            return datetime.now(UTC)
        return self.timestamp if self.timestamp.tzinfo else self.timestamp.replace(tzinfo=UTC)


class RecommendRequest(BaseModel):
    """Top-k items for a known user (`user_id`), a new user (`user` profile), or both (profile as fallback)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user_id: IdText | None = None
    user: UserProfile | None = None
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = DEFAULT_K
    context: RequestContext = RequestContext()

    @model_validator(mode="after")
    def _someone(self) -> RecommendRequest:
        if self.user_id is None and self.user is None:
            raise ValueError("give user_id or user")
        return self


def _not_blank(query: str) -> str:
    if not query.strip():
        raise ValueError("must not be empty or whitespace only")
    return query


QueryText = Annotated[
    StrictStr, Field(max_length=MAX_QUERY_CHARS), AfterValidator(_not_blank), AfterValidator(storable)
]


class SearchRequest(BaseModel):
    """Items whose name + description match `query`; with `user_id`, re-ranked for that user (personalised)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    query: QueryText
    user_id: IdText | None = None
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = DEFAULT_K
    context: RequestContext = RequestContext()  # its timestamp drives the availability filter


class SimilarRequest(BaseModel):
    """Items most like `item_id` by the two-tower item vectors ("customers also viewed")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    item_id: IdText
    k: Annotated[StrictInt, Field(ge=1, le=MAX_K)] = DEFAULT_K
    context: RequestContext = RequestContext()


# the key that tells an instance's kind -> its model. The first key found (in this order) decides: a search may
# name its user (personalised search); any other mix is rejected by the model as an unexpected field.
INSTANCE_KINDS: dict[str, type[BaseModel]] = {
    "query": SearchRequest,
    "item_id": SimilarRequest,
    "user_id": RecommendRequest,
    "user": RecommendRequest,
}


def _field_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def parse_instance(raw: Any, where: str = "instance") -> BaseModel:
    """One JSON instance -> its request model, or RequestError naming the field."""
    if not isinstance(raw, dict):
        raise RequestError(f"{where}: expected an object, got {type(raw).__name__}")
    kind = next((model for key, model in INSTANCE_KINDS.items() if key in raw), None)
    if kind is None:
        raise RequestError(f"{where}: give one of {', '.join(INSTANCE_KINDS)}")
    try:
        return kind.model_validate(raw)
    except ValidationError as exc:
        error = exc.errors(include_url=False, include_input=False)[0]
        message = error["msg"].removeprefix("Value error, ")
        raise RequestError(f"{_field_path(where, tuple(error['loc']))}: {message}") from None


def parse_instances(payload: Any) -> list[BaseModel]:
    """A V1 body (`{"instances": [...]}`) -> validated request models, all or nothing."""
    if not isinstance(payload, dict):
        raise RequestError("body: expected a JSON object with an 'instances' list")
    if "instances" not in payload:
        raise RequestError("instances: missing")
    instances = payload["instances"]
    if not isinstance(instances, list):
        raise RequestError("instances: expected a list")
    if not instances:
        raise RequestError("instances: empty")
    if len(instances) > MAX_INSTANCES:
        raise RequestError(f"instances: at most {MAX_INSTANCES} per request, got {len(instances)}")
    parsed = [parse_instance(raw, f"instances[{i}]") for i, raw in enumerate(instances)]
    queries = [r.query for r in parsed if isinstance(r, SearchRequest)]
    if len(queries) > MAX_QUERIES:
        raise RequestError(f"instances: at most {MAX_QUERIES} search queries per request, got {len(queries)}")
    chars = sum(len(q) for q in queries)
    if chars > MAX_QUERY_CHARS_PER_REQUEST:
        raise RequestError(
            f"instances: search queries of one request hold at most {MAX_QUERY_CHARS_PER_REQUEST} characters "
            f"together, got {chars}"
        )
    return parsed
