"""The V2 (Open Inference Protocol) side of the predictor: `POST /v2/models/recommender/infer`.

Inputs `user_id` (BYTES, [n]) and an optional `k` (any INT type, [1] or [n]); outputs `item_id` (BYTES [n, k])
and `score` (FP32 [n, k]), rows with fewer than k items padded with "" and 0.0. Checked strictly (400 naming the
input): each name at most once, the datatype, a shape of non-negative sizes whose product is the number of values
sent, and every id storable (recsys.request_models.check_id: no NUL, no lone surrogate, 1..128 characters).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from kserve import InferInput, InferOutput, InferRequest, InferResponse

from recsys.request_models import DEFAULT_K, MAX_INSTANCES, MAX_K, RecommendRequest, RequestError, check_id
from recsys.response_models import Recommendation

V2_USER_ID, V2_K, V2_ITEM_ID, V2_SCORE = "user_id", "k", "item_id", "score"
V2_INT_TYPES = ("INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64")


def _flat(values: Any) -> list[Any]:
    if isinstance(values, np.ndarray):
        return values.reshape(-1).tolist()
    out: list[Any] = []
    for value in values if isinstance(values, list) else [values]:
        out.extend(_flat(value) if isinstance(value, list | np.ndarray) else [value])
    return out


def _values(tensor: InferInput, max_dims: int) -> list[Any]:
    """The tensor's values, flattened, after checking its shape against them."""
    where = f"inputs.{tensor.name}"
    shape = tensor.shape
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise RequestError(f"{where}.shape: expected a list of integers")
    if not 1 <= len(shape) <= max_dims:
        raise RequestError(f"{where}.shape: expected {max_dims} dimension(s) at most, got {list(shape)}")
    if any(d < 0 for d in shape):
        raise RequestError(f"{where}.shape: sizes must not be negative, got {list(shape)}")
    values = _flat(tensor.data)
    if math.prod(shape) != len(values):
        raise RequestError(f"{where}.shape: {list(shape)} does not match the {len(values)} values sent")
    return values


def _user_id(value: Any, where: str) -> str:
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise RequestError(f"{where}: not valid UTF-8") from None
    return check_id(value, where)


def parse_v2_request(request: InferRequest) -> list[RecommendRequest]:
    """V2 inputs -> RecommendRequests, or RequestError naming the input."""
    names = [i.name for i in request.inputs]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise RequestError(f"inputs.{duplicated[0]}: given more than once")
    inputs = {i.name: i for i in request.inputs}
    unknown = sorted(set(inputs) - {V2_USER_ID, V2_K})
    if unknown:
        raise RequestError(f"inputs.{unknown[0]}: unknown input (expected {V2_USER_ID} and optional {V2_K})")
    if V2_USER_ID not in inputs:
        raise RequestError(f"inputs.{V2_USER_ID}: missing")
    users = inputs[V2_USER_ID]
    if users.datatype != "BYTES":
        raise RequestError(f"inputs.{V2_USER_ID}: datatype must be BYTES, got {users.datatype}")
    raw_ids = _values(users, max_dims=1)
    if not raw_ids:
        raise RequestError(f"inputs.{V2_USER_ID}: empty")
    if len(raw_ids) > MAX_INSTANCES:
        raise RequestError(f"inputs.{V2_USER_ID}: at most {MAX_INSTANCES} users per request, got {len(raw_ids)}")
    ids = [_user_id(v, f"inputs.{V2_USER_ID}[{i}]") for i, v in enumerate(raw_ids)]
    ks = [DEFAULT_K] * len(ids)
    if V2_K in inputs:
        k_input = inputs[V2_K]
        if k_input.datatype not in V2_INT_TYPES:
            raise RequestError(f"inputs.{V2_K}: datatype must be an integer type, got {k_input.datatype}")
        values = _values(k_input, max_dims=1)
        if len(values) not in (1, len(ids)):
            raise RequestError(f"inputs.{V2_K}: give one k or one per user_id, got {len(values)}")
        if not all(isinstance(v, int) and not isinstance(v, bool) and 1 <= v <= MAX_K for v in values):
            raise RequestError(f"inputs.{V2_K}: each k must be an integer in 1..{MAX_K}")
        ks = values * len(ids) if len(values) == 1 else values
    return [RecommendRequest(user_id=user_id, k=k) for user_id, k in zip(ids, ks, strict=True)]


def v2_response(request: InferRequest, model_name: str, predictions: list[Recommendation]) -> InferResponse:
    width = max((len(p["items"]) for p in predictions), default=0)
    item_ids, scores = [], []
    for p in predictions:
        pad = width - len(p["items"])
        item_ids.extend([i["item_id"] for i in p["items"]] + [""] * pad)
        scores.extend([i["score"] for i in p["items"]] + [0.0] * pad)
    shape = [len(predictions), width]
    version = predictions[0]["model_version"] if predictions else None
    return InferResponse(
        response_id=request.id or "",
        model_name=model_name,
        model_version=version,
        infer_outputs=[
            InferOutput(name=V2_ITEM_ID, shape=shape, datatype="BYTES", data=item_ids),
            InferOutput(name=V2_SCORE, shape=shape, datatype="FP32", data=scores),
        ],
    )
