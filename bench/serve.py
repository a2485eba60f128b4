"""Serving under load: 16 concurrent keep-alive clients against a real `recsys serve` (KServe V1) on loopback,
10k items / 1k users; the same recommendations through Feast's retrieve_online_documents_v2 (the replaced
system's path) in the same run; a cProfile of the in-process online path showing where a request's time goes.

BENCH_SERVE_SECONDS sets the load phase (default 60 s).
"""

from __future__ import annotations

import cProfile
import http.client
import io
import json
import os
import pstats
import random
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from bench.common import RESULTS_DIR, ROOT, Goal, Result, percentiles_ms, table
from bench.env import env_float, load_note, quick, workspace
from bench.fixtures import SEED, FeastDocuments, fit_and_save, generate_data
from recsys import schema
from recsys.contract import PREDICT_PATH
from recsys.predictor_process import running_predictor

CLIENTS = 16
K = 10
P99_GOAL_MS = 20.0
RPS_GOAL = 300.0
SERVER_START_TIMEOUT_S = 120
# where the in-process profile attributes a request's time: (file suffix, function) -> label
PROFILE_PARTS = {
    ("feast/feature_store.py", "get_online_features"): "Feast get_online_features (user features + stored vector)",
    ("recsys/history.py", "read_user_history"): "user history read (Postgres)",
    ("recsys/model/artifacts.py", "encode_users"): "user tower forward",
    ("recsys/retrieval.py", "search"): "candidate retrieval",
    ("recsys/retrieval.py", "widen_until_k"): "retrieval + filters (all rounds)",
    ("recsys/recommender.py", "_response"): "response building",
}


def sizes() -> dict:
    if quick():
        return {"data": {"n_users": 100, "n_items": 400, "n_interactions": 3000}, "epochs": 1, "seconds": 3.0,
                "single": 20, "feast": 10, "profile": 20}  # fmt: skip
    return {
        "data": {"n_users": 1000, "n_items": 10_000, "n_interactions": 40_000},
        "epochs": 3,
        "seconds": env_float("BENCH_SERVE_SECONDS", 60.0),
        "single": 300,
        "feast": 100,
        "profile": 300,
    }


def body(user_id: str) -> bytes:
    return json.dumps({"instances": [{"user_id": user_id, "k": K}]}).encode()


class Client:
    """One keep-alive HTTP/1.1 connection, as a load-testing client holds it."""

    def __init__(self, port: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)

    def call(self, user_id: str) -> tuple[float, int]:
        started = time.perf_counter()
        try:
            self.conn.request("POST", PREDICT_PATH, body(user_id), {"Content-Type": "application/json"})
            response = self.conn.getresponse()
            payload = response.read()
            status = response.status
            if status == 200 and len(json.loads(payload)["predictions"][0]["items"]) != K:
                status = -1  # an answer without k items counts as an error
        except (OSError, http.client.HTTPException):
            self.conn.close()
            status = 0
        return time.perf_counter() - started, status


def load(port: int, user_ids: list[str], clients: int, seconds: float) -> dict:
    """`clients` threads, each with its own connection, calling back to back for `seconds`."""
    latencies: list[list[float]] = [[] for _ in range(clients)]
    statuses: list[list[int]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)
    deadline = [0.0]

    def worker(slot: int) -> None:
        client, rng = Client(port), random.Random(SEED + slot)
        client.call(user_ids[0])  # open the connection before the clock starts
        barrier.wait()
        while time.perf_counter() < deadline[0]:
            seconds_taken, status = client.call(rng.choice(user_ids))
            latencies[slot].append(seconds_taken)
            statuses[slot].append(status)

    threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
    for t in threads:
        t.start()
    own_cpu = time.process_time()
    deadline[0] = time.perf_counter() + seconds
    barrier.wait()
    started = time.perf_counter()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    own_cpu = time.process_time() - own_cpu
    flat = [s for slot in latencies for s in slot]
    codes = [c for slot in statuses for c in slot]
    errors = sum(1 for c in codes if c != 200)
    return {
        "clients": clients,
        "seconds": wall,
        "requests": len(flat),
        "errors": errors,
        "rps": len(flat) / wall,
        "latency_ms": percentiles_ms(flat),
        "client_cpu_s": own_cpu,
        "client_cpu_share_of_2_cores": own_cpu / (wall * (os.cpu_count() or 1)),
        "latencies_s": flat,
    }


def cpu_seconds(processes: list[psutil.Process]) -> float:
    total = 0.0
    for proc in processes:
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:  # a Postgres backend that ended meanwhile
            continue
        total += times.user + times.system
    return total


def with_children(proc: psutil.Process) -> list[psutil.Process]:
    return [proc, *proc.children(recursive=True)]


def our_postgres(root: Path) -> list[psutil.Process]:
    """The benchmark's own Postgres (its postmaster's command line names the workspace) and its backends."""
    for proc in psutil.process_iter(["cmdline"]):
        if str(root) in " ".join(proc.info["cmdline"] or []) and proc.name().startswith("postgres"):
            return with_children(proc)
    return []


def machine_busy_s() -> float:
    times = psutil.cpu_times()
    # Linux counts guest time inside user time as well (leave it out once); steal is time the VM did not get
    skipped = ("idle", "iowait", "steal", "guest", "guest_nice")
    return sum(value for name, value in times._asdict().items() if name not in skipped)


def feast_path(user_ids: list[str]) -> dict:
    """The replaced system's online path: the user's stored vector from Feast, then Feast's vector search over
    item_embedding (k items). One request at a time, in this process."""
    from recsys.feature_store import get_store

    store = get_store()
    documents = FeastDocuments(store, schema.VIEW_ITEM_EMBEDDING)
    ref = f"{schema.VIEW_USER_EMBEDDING}:{schema.USER_VECTOR}"

    def one(user_id: str) -> list[str]:
        vector = store.get_online_features(features=[ref], entity_rows=[{schema.USER_ID: user_id}]).to_dict()
        return documents.top_k(np.asarray(vector[schema.USER_VECTOR][0], dtype=np.float32), K)

    one(user_ids[0])
    seconds = []
    for user_id in user_ids:
        started = time.perf_counter()
        found = one(user_id)
        seconds.append(time.perf_counter() - started)
        if len(found) != K:
            raise RuntimeError(f"Feast returned {len(found)} items for {user_id}, expected {K}")
    return {"latency_ms": percentiles_ms(seconds), "rps_one_client": len(seconds) / sum(seconds)}


def profile(model_dir: Path, user_ids: list[str], batch: int) -> dict:
    """cProfile of Recommender.recommend (the predictor's work, without HTTP), `batch` users per call: 1 as a
    lone client sends them, CLIENTS as the predictor's micro-batcher merges concurrent requests under load."""
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


def prepare(root: Path, sz: dict) -> tuple[Path, list[str], dict]:
    """Generate, feast apply + materialize, train and publish: the state `recsys demo` leaves."""
    from recsys import feature_store
    from recsys.config import get_settings
    from recsys.publish import publish

    data = generate_data(get_settings().data_dir, **sz["data"])
    feature_store.apply()
    feature_store.materialize()
    model_dir = fit_and_save(data, root / "model", epochs=sz["epochs"])
    report = publish(model_dir)
    import pandas as pd

    users = pd.read_parquet(data / schema.USERS_FILE)[schema.USER_ID].astype(str).tolist()
    return model_dir, users, report.timings_s


def run() -> Result:
    started_under = load_note()
    sz = sizes()
    with workspace("serve") as root:
        print("   serve: generate, feast apply/materialize, train, publish", flush=True)
        model_dir, users, publish_timings = prepare(root, sz)
        with running_predictor(
            model_dir, root / "serve.log", via_cli=True, cwd=ROOT, ready_timeout_s=SERVER_START_TIMEOUT_S
        ) as server:
            port = server.port
            load(port, users, CLIENTS, min(3.0, sz["seconds"]))  # warm-up: caches, pools, allocator
            print(f"   serve: {CLIENTS} clients for {sz['seconds']:.0f} s", flush=True)
            watched = {"server": with_children(psutil.Process(server.process.pid)), "postgres": our_postgres(root)}
            before = {name: cpu_seconds(procs) for name, procs in watched.items()}
            busy = machine_busy_s()
            loaded = load(port, users, CLIENTS, sz["seconds"])
            capacity = loaded["seconds"] * (os.cpu_count() or 1)
            for name, procs in watched.items():
                loaded[f"{name}_cpu_share_of_2_cores"] = (cpu_seconds(procs) - before[name]) / capacity
            loaded["machine_busy_share"] = (machine_busy_s() - busy) / capacity
            client = Client(port)
            single_s = [client.call(u)[0] for u in users[: sz["single"]]]
        print("   serve: Feast path and profile", flush=True)
        feast = feast_path(users[: sz["feast"]])
        prof = {f"batch_{b}": profile(model_dir, users[: sz["profile"]], b) for b in (1, CLIENTS)}
    latencies = loaded.pop("latencies_s")
    plot(latencies, RESULTS_DIR / "serve.png", loaded)
    data = {
        "sizes": sz,
        "load": loaded,
        "one_client_latency_ms": percentiles_ms(single_s),
        "feast_path": feast,
        "profile": prof,
        "publish_timings_s": publish_timings,
    }
    return Result(
        name="serve",
        title="Serving under load: recsys serve (KServe V1) vs the Feast v2 path",
        command="python -m bench serve",
        markdown=markdown(data) + "\n\n" + started_under,
        goals=goals(data),
        data=data,
    )


def limits(d: dict) -> str:
    batched = d["profile"][f"batch_{CLIENTS}"]
    parts = batched["per_request_ms"]
    biggest = sorted(parts.items(), key=lambda item: -item[1])[:2]
    spent = ", ".join(f"{label} {ms:.1f} ms" for label, ms in biggest)
    return (
        f"CPU: the server process used {d['load']['server_cpu_share_of_2_cores'] * (os.cpu_count() or 1):.2f} "
        "cores (one Python worker: ~1.0 means its interpreter is saturated), Postgres "
        f"{d['load']['postgres_cpu_share_of_2_cores'] * (os.cpu_count() or 1):.2f} cores, machine {d['load']['machine_busy_share']:.0%} busy; per request (cProfile, "
        f"in-process, {CLIENTS} users per call as the micro-batcher merges them: "
        f"{batched['wall_ms_per_request_profiled']:.1f} ms per request): {spent}"
    )


def goals(d: dict) -> list[Goal]:
    p99, rps = d["load"]["latency_ms"]["p99"], d["load"]["rps"]
    return [
        Goal(
            figure=f"serve p99, {CLIENTS} clients",
            goal=f"<= {P99_GOAL_MS:g} ms",
            measured=f"{p99:.1f} ms (p50 {d['load']['latency_ms']['p50']:.1f})",
            met=p99 <= P99_GOAL_MS,
            limited_by="" if p99 <= P99_GOAL_MS else limits(d),
        ),
        Goal(
            figure=f"serve throughput, {CLIENTS} clients",
            goal=f">= {RPS_GOAL:g} req/s",
            measured=f"{rps:.0f} req/s, {d['load']['errors']} errors",
            met=rps >= RPS_GOAL and d["load"]["errors"] == 0,
            limited_by="" if rps >= RPS_GOAL else limits(d),
        ),
    ]


def markdown(d: dict) -> str:
    ld, one, feast, prof = d["load"], d["one_client_latency_ms"], d["feast_path"], d["profile"]
    data = d["sizes"]["data"]
    rows = [
        [f"recsys serve, {CLIENTS} clients", ld["requests"], ld["latency_ms"]["p50"], ld["latency_ms"]["p95"],
         ld["latency_ms"]["p99"], f"{ld['rps']:.0f}", ld["errors"]],
        ["recsys serve, 1 client", one["n"], one["p50"], one["p95"], one["p99"], f"{1000 / one['mean']:.0f}", 0],
        ["Feast path (get_online_features + retrieve_online_documents_v2), 1 client", feast["latency_ms"]["n"],
         feast["latency_ms"]["p50"], feast["latency_ms"]["p95"], feast["latency_ms"]["p99"],
         f"{feast['rps_one_client']:.0f}", 0],
    ]  # fmt: skip
    one_call, merged = prof["batch_1"], prof[f"batch_{CLIENTS}"]
    labels = sorted(merged["per_request_ms"], key=lambda label: -merged["per_request_ms"][label])
    parts = [
        [label, f"{one_call['per_request_ms'].get(label, 0.0):.2f}", f"{merged['per_request_ms'][label]:.2f}"]
        for label in labels
    ]
    parts.append(
        [
            "whole recommend call, per request",
            f"{one_call['wall_ms_per_request_profiled']:.2f}",
            f"{merged['wall_ms_per_request_profiled']:.2f}",
        ]
    )
    return "\n".join(
        [
            f"`recsys generate` {data['n_users']} users / {data['n_items']} items / {data['n_interactions']} "
            f"interactions, `feast apply` + `materialize`, training ({d['sizes']['epochs']} epochs of `recsys train`'s loop, no baseline evaluation), "
            "`recsys publish`, then `recsys serve` (KServe ModelServer, 1 worker, exact retrieval, default "
            f"filters). Each client holds one keep-alive HTTP/1.1 connection on 127.0.0.1 and sends V1 requests "
            f"for one random known user, k={K}, back to back for {ld['seconds']:.0f} s (`BENCH_SERVE_SECONDS` sets "
            "it); an answer without k items counts as an error. The Feast path is what the replaced system would do per request: read the "
            "user's stored vector from Feast, then `retrieve_online_documents_v2` over item_embedding (no "
            "filters), one request at a time in-process.",
            "",
            table(["path", "requests", "p50 ms", "p95 ms", "p99 ms", "req/s", "errors"], rows),
            "",
            f"Same run: one-client p50 of the Feast path / ours = "
            f"{feast['latency_ms']['p50'] / one['p50']:.1f}x; our {CLIENTS}-client throughput / Feast path one "
            f"client = {ld['rps'] / feast['rps_one_client']:.1f}x. The load generator (threads, http.client) used "
            f"{ld['client_cpu_share_of_2_cores']:.0%} of the 2 cores during the load phase, the server "
            f"{ld['server_cpu_share_of_2_cores']:.0%}, its Postgres {ld['postgres_cpu_share_of_2_cores']:.0%}; "
            f"the whole machine was {ld['machine_busy_share']:.0%} busy (anything above the sum is other work "
            "on the machine).",
            "",
            "![latency histogram](bench/results/serve.png)",
            "",
            "The predictor merges concurrent requests into one `Recommender.recommend` call (serving.batching), so "
            "under load one Feast read, one history read and one tower forward serve several requests. Where a "
            f"request's time goes: cProfile of `Recommender.recommend` in-process over {one_call['requests']} users, "
            f"one per call and {CLIENTS} per call (times under the profiler; parts "
            "overlap where one calls another):",
            "",
            table(["part", "ms per request, 1 user per call", f"ms per request, {CLIENTS} users per call"], parts),
            "",
            f"<details><summary>cProfile ({CLIENTS} users per call), top functions by cumulative time</summary>",
            "",
            "```",
            merged["top_cumulative"],
            "```",
            "</details>",
            "",
            "Publish timings of this data set (s): "
            + ", ".join(f"{k} {v:.2f}" for k, v in d["publish_timings_s"].items()),
        ]
    )


def plot(latencies_s: list[float], path: Path, ld: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ms = np.asarray(latencies_s) * 1000
    fig, ax = plt.subplots(figsize=(7, 3.8))
    ax.hist(ms, bins=np.logspace(np.log10(max(ms.min(), 0.1)), np.log10(ms.max() + 1e-9), 60))
    ax.set_xscale("log")
    for name in ("p50", "p95", "p99"):
        ax.axvline(ld["latency_ms"][name], linestyle="--", linewidth=1)
        ax.text(ld["latency_ms"][name], ax.get_ylim()[1] * 0.9, f" {name}", fontsize=8)
    ax.axvline(P99_GOAL_MS, color="red", linewidth=1)
    ax.set_xlabel("latency (ms, log)")
    ax.set_ylabel("requests")
    ax.set_title(f"{ld['clients']} clients, {ld['rps']:.0f} req/s, {ld['errors']} errors")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
