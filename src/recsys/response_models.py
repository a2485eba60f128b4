"""Response shapes of the online path, next to the request models (recsys.request_models).

Responses stay plain JSON-ready dicts (KServe's V1 path serialises dicts; clients and tests index them), so
the shapes are TypedDicts: a type checker checks every place that builds one, and pydantic validates a body
against them (`PREDICT_RESPONSE.validate_python(body)`) or writes their JSON schema. Unknown keys are
rejected, so a validated body holds exactly these fields. The key names are schema's column names where they
name one (item_id, user_id, model_version, product_name, category, img_link).

V1 `POST /v1/models/<name>:predict` answers `PredictResponse`: one prediction per instance, in order, whose
kind follows the instance's (recsys.request_models.INSTANCE_KINDS). Bad input answers `ErrorResponse` (400).
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, TypeAdapter, with_config
from typing_extensions import TypedDict  # pydantic validates typing.TypedDict only from Python 3.12

Source = Literal["stored_embedding", "user_tower", "popularity"]  # where a user vector came from
SearchMode = Literal["search", "personalised_search"]
SimilarMode = Literal["similar"]
_EXACT = ConfigDict(extra="forbid")


@with_config(_EXACT)
class ResponseItem(TypedDict):
    """One recommended / found item, best first in its list."""

    item_id: str
    # rounded to 6 digits: the reranked (blended) score when the model has a reranker and the user a history,
    # else the cosine; plus contextual boosts; the popularity share for the popularity fallback
    score: float
    product_name: str
    category: str  # 'Department|Group|Leaf'
    img_link: str | None
    actual_price: float | None  # list price
    discounted_price: float | None  # what the shopper pays now


@with_config(_EXACT)
class Recommendation(TypedDict):
    """The answer to a RecommendRequest."""

    user_id: str | None
    model_version: str
    cold_start: bool
    source: Source
    items: list[ResponseItem]
    filtered: dict[str, int]  # filter rule -> candidates it removed (recsys.filters.RULE_NAMES)


@with_config(_EXACT)
class SearchAnswer(TypedDict):
    """The answer to a SearchRequest: plain, or personalised when it named a user that has a vector."""

    mode: SearchMode
    query: str
    user_id: str | None
    model_version: str
    items: list[ResponseItem]
    filtered: dict[str, int]  # only the availability rule applies to search


@with_config(_EXACT)
class SimilarAnswer(TypedDict):
    """The answer to a SimilarRequest ("customers also viewed"); the item itself is never among `items`."""

    mode: SimilarMode
    item_id: str
    model_version: str
    items: list[ResponseItem]
    filtered: dict[str, int]


Prediction = Recommendation | SearchAnswer | SimilarAnswer


@with_config(_EXACT)
class PredictResponse(TypedDict):
    predictions: list[Prediction]


@with_config(_EXACT)
class ErrorResponse(TypedDict):
    error: str  # "<field path>: <why>"


PREDICT_RESPONSE: TypeAdapter[PredictResponse] = TypeAdapter(PredictResponse)
