"""`recsys serve` (the KServe predictor) and its clients `recommend`, `search` and `similar`.

The three clients build one V1 instance and share one answer path: validated here first, then answered by a
running predictor (`--url`) or in this process over the same code the predictor runs.
"""

from __future__ import annotations

import json
import re
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
ModelDir = Annotated[
    Path | None,
    typer.Option(
        help="a model dir or model store to load the live version from "
        "[default: env RECSYS_MODEL_DIR, else the model store: RECSYS_HOME/models, env RECSYS_MODELS_DIR]"
    ),
]
JsonOutput = Annotated[bool, typer.Option("--json", help="print the raw V1 prediction as JSON (for scripts)")]
HTTP_TIMEOUT_S = 30.0


@commands.command("serve")
def serve_cmd(
    model_dir: ModelDir = None,
    http_port: Annotated[int, typer.Option(help="HTTP port of the KServe ModelServer")] = 8080,
    host: Annotated[str, typer.Option(help="address to listen on (0.0.0.0: every interface, as in a pod)")] = (
        "127.0.0.1"
    ),
    workers: Annotated[
        int, typer.Option(min=1, help="serving processes, each loading the model (one per core the predictor may use)")
    ] = 1,
) -> None:
    """Run the KServe predictor (model `recommender`, V1 and V2 protocols) until interrupted; it serves the live
    model version and switches when another one is published or rolled back to."""
    import serving  # noqa: F401  first: it caps BLAS threads before _serving_dir loads numpy (serving/__init__.py)

    serving_dir = _serving_dir(model_dir)
    _check_port_free(host, http_port)  # now, not after the model has loaded
    from serving.server import parser, serve

    serve(serving_dir, http_port, parser.parse_args(["--host", host, "--workers", str(workers)]))


def _serving_dir(model_dir: Path | None) -> Path:
    """The folder the live version is loaded from; a wrong path is an error now, not a never-ready server."""
    from recsys import model_store

    settings = get_settings()
    try:
        return model_store.serving_dir(model_dir, settings)
    except model_store.ModelStoreError as exc:
        hint = "" if model_dir or settings.model_dir else " (`recsys train` adds models to the store)"
        fail(f"{exc}{hint}")


def _check_port_free(host: str, port: int) -> None:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            fail(
                f"port {port} on {host} is not free ({exc.strerror}): stop what uses it or pick another with --http-port"
            )


@commands.command("recommend")
def recommend_cmd(
    user_id: Annotated[str | None, typer.Option(help="a known (or unknown) user id")] = None,
    k: K = 10,
    preferences: Annotated[str | None, typer.Option(help="new-user profile: '|'-joined categories")] = None,
    age: Annotated[int | None, typer.Option(help="new-user profile: age")] = None,
    gender: Annotated[str | None, typer.Option(help="new-user profile: gender")] = None,
    timestamp: Annotated[str | None, typer.Option(help="request time, ISO 8601 [default: now]")] = None,
    device: Annotated[str | None, typer.Option(help="request context: mobile, desktop, tablet...")] = None,
    season: Annotated[str | None, typer.Option(help="request context: winter, spring, summer, autumn")] = None,
    url: PredictorUrl = None,
    model_dir: ModelDir = None,
    as_json: JsonOutput = False,
) -> None:
    """Print the top-k recommendations for a user (in-process, or through a running predictor with --url).

    Give --user-id, or a new user's profile (--preferences, --age, --gender), or both."""
    if user_id is None and preferences is None and age is None and gender is None:
        fail("give --user-id, or a new user's --preferences/--age/--gender")
    instance: dict[str, Any] = {"k": k}
    context = {key: value for key, value in (("device", device), ("season", season)) if value is not None}
    if context:
        instance["context"] = context
    if user_id is not None:
        instance[schema.USER_ID] = user_id
    profile = {
        key: value
        for key, value in ((schema.PREFERENCES, preferences), (schema.AGE, age), (schema.GENDER, gender))
        if value is not None
    }
    if profile:
        instance["user"] = profile
    answer_one(instance, timestamp, url, model_dir, as_json)


@commands.command("search")
def search_cmd(
    query: Annotated[str, typer.Argument(help="what to look for, e.g. 'wireless headphones for running'")],
    k: K = 10,
    user_id: Annotated[str | None, typer.Option(help="personalise the order for this user")] = None,
    timestamp: Timestamp = None,
    url: PredictorUrl = None,
    model_dir: ModelDir = None,
    as_json: JsonOutput = False,
) -> None:
    """Semantic search over product names + descriptions (personalised with --user-id)."""
    instance: dict[str, Any] = {"query": query, "k": k}
    if user_id is not None:
        instance[schema.USER_ID] = user_id
    answer_one(instance, timestamp, url, model_dir, as_json)


@commands.command("similar")
def similar_cmd(
    item_id: Annotated[str, typer.Option(help="the item to find look-alikes of")],
    k: K = 10,
    timestamp: Timestamp = None,
    url: PredictorUrl = None,
    model_dir: ModelDir = None,
    as_json: JsonOutput = False,
) -> None:
    """Items nearest to an item by the two-tower vectors ("customers also viewed"), the item itself excluded."""
    answer_one({schema.ITEM_ID: item_id, "k": k}, timestamp, url, model_dir, as_json)


def answer_one(
    instance: dict[str, Any],
    timestamp: str | None,
    url: str | None,
    model_dir: Path | None,
    as_json: bool = False,
) -> None:
    """Validate one V1 instance, answer it through the predictor at `url` or in-process, print the answer
    (a table, or the V1 prediction as JSON with `as_json`).

    Bad input exits 2 with the field named (whether found here, by the predictor or against the catalogue);
    an unreachable, failing or not-ready predictor or database exits 1.
    """
    from recsys.request_models import RequestError, parse_instances

    if timestamp is not None:
        instance = {**instance, "context": {**instance.get("context", {}), "timestamp": timestamp}}
    body = {"instances": [instance]}
    try:
        [request] = parse_instances(body)
    except RequestError as exc:
        fail(_as_flags(str(exc)))
    in_process = url is None
    prediction = _answer_in_process(request, _serving_dir(model_dir)) if in_process else _ask_predictor(url, body)
    if as_json:
        console.print_json(json.dumps(prediction))
    else:
        from recsys.cli.tables import recommendations_table

        console.print(recommendations_table(_label(instance, prediction), prediction))


def _as_flags(message: str) -> str:
    """A request error names JSON fields (instances[0].user.age); on the command line the flags are meant."""
    for prefix in ("instances[0].user.", "instances[0].context.", "instances[0]."):
        message = re.sub(re.escape(prefix) + r"(\w+)", lambda m: "--" + m.group(1).replace("_", "-"), message)
    return message.replace("instances[0]", "the request")


def _label(instance: dict[str, Any], prediction: dict[str, Any]) -> str:
    subject = (
        f"search {instance['query']!r}"
        if "query" in instance
        else f"similar to {instance[schema.ITEM_ID]}"
        if schema.ITEM_ID in instance
        else f"user {instance.get(schema.USER_ID, 'new user')}"
    )
    return f"{subject}, model {prediction.get('model_version')}"


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
    from recsys.request_models import RecommendRequest, RequestError, SearchRequest
    from recsys.search import Searcher
    from recsys.serving_state import NotReady, ServingState

    state = ServingState.from_settings(model_dir, poll=False)
    try:
        reason = state.not_ready_reason()
        if reason is not None:
            fail(f"not ready: {reason}", code=1)
        recommender = Recommender(state)
        if isinstance(request, RecommendRequest):
            return dict(recommender.recommend([request])[0])
        # only a text query needs the text encoder; similar items rank by the two-tower vectors
        searcher = Searcher(state, recommender, load_encoder=isinstance(request, SearchRequest))
        return dict(searcher.answer([request])[0])
    except RequestError as exc:  # e.g. an unknown item_id, known only once the catalogue is read
        fail(_as_flags(str(exc)))
    except NotReady as exc:
        fail(f"not ready: {exc} (`recsys models list` shows what is live)", code=1)
    finally:
        state.close()
