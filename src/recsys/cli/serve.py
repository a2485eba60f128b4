"""`recsys serve` (the KServe predictor) and its clients `recommend`, `search` and `similar`.

The three clients build one V1 instance and share one answer path: validated here first, then answered by a
running predictor (`--url`) or in this process over the same code the predictor runs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from recsys import schema
from recsys.cli.output import console, fail
from recsys.config import get_settings

commands = typer.Typer()

K = Annotated[int, typer.Option(help="how many items")]
Timestamp = Annotated[
    str | None, typer.Option(help="request time, ISO 8601, for the availability filter [default: now]")
]
PredictorUrl = Annotated[str | None, typer.Option(help="ask a running predictor (http://host:port) instead")]
InProcessModelDir = Annotated[Path | None, typer.Option(help="model dir for the in-process path")]
HTTP_TIMEOUT_S = 30.0


@commands.command("serve")
def serve_cmd(
    model_dir: Annotated[Path | None, typer.Option(help="trained model dir [default: RECSYS_MODEL_DIR]")] = None,
    http_port: Annotated[int, typer.Option(help="HTTP port of the KServe ModelServer")] = 8080,
) -> None:
    """Run the KServe predictor (model `recommender`, V1 and V2 protocols) until interrupted."""
    from serving.server import serve

    serve(model_dir or get_settings().model_dir, http_port)


@commands.command("recommend")
def recommend_cmd(
    user_id: Annotated[str | None, typer.Option(help="a known (or unknown) user id")] = None,
    k: K = 10,
    preferences: Annotated[str | None, typer.Option(help="new-user profile: '|'-joined categories")] = None,
    age: Annotated[int | None, typer.Option(help="new-user profile: age")] = None,
    gender: Annotated[str | None, typer.Option(help="new-user profile: gender")] = None,
    timestamp: Annotated[str | None, typer.Option(help="request time, ISO 8601 [default: now]")] = None,
    url: PredictorUrl = None,
    model_dir: InProcessModelDir = None,
) -> None:
    """Print the top-k recommendations for a user (in-process, or through a running predictor with --url)."""
    instance: dict[str, Any] = {"k": k}
    if user_id is not None:
        instance[schema.USER_ID] = user_id
    profile = {
        key: value
        for key, value in ((schema.PREFERENCES, preferences), (schema.AGE, age), (schema.GENDER, gender))
        if value is not None
    }
    if profile:
        instance["user"] = profile
    answer_one(instance, timestamp, url, model_dir)


@commands.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="what to look for, e.g. 'wireless headphones for running'")],
    k: K = 10,
    user_id: Annotated[str | None, typer.Option(help="personalise the order for this user")] = None,
    timestamp: Timestamp = None,
    url: PredictorUrl = None,
    model_dir: InProcessModelDir = None,
) -> None:
    """Semantic search over product names + descriptions (personalised with --user-id)."""
    instance: dict[str, Any] = {"query": query, "k": k}
    if user_id is not None:
        instance[schema.USER_ID] = user_id
    answer_one(instance, timestamp, url, model_dir)


@commands.command("similar")
def similar_cmd(
    item_id: Annotated[str, typer.Option(help="the item to find look-alikes of")],
    k: K = 10,
    timestamp: Timestamp = None,
    url: PredictorUrl = None,
    model_dir: InProcessModelDir = None,
) -> None:
    """Items nearest to an item by the two-tower vectors ("customers also viewed"), the item itself excluded."""
    answer_one({schema.ITEM_ID: item_id, "k": k}, timestamp, url, model_dir)


def answer_one(instance: dict[str, Any], timestamp: str | None, url: str | None, model_dir: Path | None) -> None:
    """Validate one V1 instance, answer it through the predictor at `url` or in-process, print the answer.

    Bad input exits 2 with the field named (whether found here, by the predictor or against the catalogue);
    an unreachable, failing or not-ready predictor or database exits 1.
    """
    from recsys.request_models import RequestError, parse_instances

    if timestamp is not None:
        instance = {**instance, "context": {"timestamp": timestamp}}
    body = {"instances": [instance]}
    try:
        [request] = parse_instances(body)
    except RequestError as exc:
        fail(str(exc))
    prediction = _ask_predictor(url, body) if url is not None else _answer_in_process(request, model_dir)
    console.print_json(json.dumps(prediction))


def _ask_predictor(url: str, body: dict[str, Any]) -> dict[str, Any]:
    import httpx

    from recsys.contract import PREDICT_PATH

    try:
        response = httpx.post(url.rstrip("/") + PREDICT_PATH, json=body, timeout=HTTP_TIMEOUT_S)
    except httpx.HTTPError as exc:
        fail(f"cannot reach {url}: {type(exc).__name__}", code=1)
    if response.status_code == 400:
        fail(_error_message(response))
    if response.status_code != 200:
        fail(f"{response.status_code}: {response.text}", code=1)
    return response.json()["predictions"][0]


def _error_message(response: Any) -> str:
    """The predictor's {"error": ...} text, or the raw body when it is not that shape."""
    try:
        return str(response.json()["error"])
    except (ValueError, KeyError, TypeError):
        return response.text


def _answer_in_process(request: Any, model_dir: Path | None) -> dict[str, Any]:
    from recsys.recommender import Recommender
    from recsys.request_models import RecommendRequest, RequestError
    from recsys.search import Searcher
    from recsys.serving_state import NotReady, ServingState

    state = ServingState.from_settings(model_dir, poll=False)
    try:
        recommender = Recommender(state)
        if isinstance(request, RecommendRequest):
            return dict(recommender.recommend([request])[0])
        return dict(Searcher(state, recommender).answer([request])[0])
    except RequestError as exc:  # e.g. an unknown item_id, known only once the catalogue is read
        fail(str(exc))
    except NotReady as exc:
        fail(f"not ready: {exc} (has `recsys publish` run for this model?)", code=1)
    finally:
        state.close()
