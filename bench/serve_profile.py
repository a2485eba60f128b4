"""cProfile of the in-process online path (Recommender.recommend, no HTTP) for bench/serve.py: where a request's
time goes, with one user per call and with as many as the micro-batcher merges under load."""

from __future__ import annotations

import cProfile
import io
import pstats
import time
from pathlib import Path

K = 10
# where the in-process profile attributes a request's time: (file suffix, function) -> label
PROFILE_PARTS = {
    ("feast/feature_store.py", "get_online_features"): "Feast get_online_features (user features + stored vector)",
    ("recsys/history.py", "read_user_history"): "user history read (Postgres)",
    ("recsys/model/artifacts.py", "encode_users"): "user tower forward",
    ("recsys/retrieval.py", "search"): "candidate retrieval",
    ("recsys/retrieval.py", "widen_until_k"): "retrieval + filters + rerank (all rounds)",
    ("recsys/model/rerank.py", "score"): "item-item rerank (models with a reranker)",
    ("recsys/recommender.py", "_response"): "response building",
}


def profile(model_dir: Path, user_ids: list[str], batch: int) -> dict:
    """cProfile of Recommender.recommend (the predictor's work, without HTTP), `batch` users per call: 1 as a
    lone client sends them, 16 as the predictor's micro-batcher merges concurrent requests under load."""
    from recsys.recommender import Recommender
    from recsys.request_models import RecommendRequest
    from recsys.serving_state import ServingState

    state = ServingState.from_settings(model_dir, poll=False)
    recommender = Recommender(state)
    try:
        singles = [RecommendRequest(user_id=u, k=K) for u in user_ids]
        calls = [singles[i : i + batch] for i in range(0, len(singles) - batch + 1, batch)]
        recommender.recommend(calls[0])
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for call in calls:
            recommender.recommend(call)
        profiler.disable()
        wall = time.perf_counter() - started
    finally:
        state.close()
    stats = pstats.Stats(profiler)
    per_request_ms = {}
    for (path, _, name), (_, _, _, cumulative, _) in stats.stats.items():
        for (suffix, function), label in PROFILE_PARTS.items():
            if name == function and path.endswith(suffix):
                per_request_ms[label] = per_request_ms.get(label, 0.0) + cumulative * 1000 / (len(calls) * batch)
    text = io.StringIO()
    pstats.Stats(profiler, stream=text).sort_stats("cumulative").print_stats(18)
    lines = [line for line in text.getvalue().splitlines() if line.strip()]
    top = "\n".join(lines[lines.index(next(line for line in lines if "ncalls" in line)) :])
    return {
        "batch": batch,
        "requests": len(calls) * batch,
        "wall_ms_per_request_profiled": wall * 1000 / (len(calls) * batch),
        "per_request_ms": per_request_ms,
        "top_cumulative": top,
    }
