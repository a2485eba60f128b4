"""Serving under load: closed-loop keep-alive clients (16, then 64) against a real `recsys serve --workers N`
(KServe V1) on loopback, 10k items / 1k users, side by side with a no-op KServe predictor (bench/noop_predictor.py:
the same server, workers and middleware, a constant answer) driven by the same clients in the same run: the
stack's ceiling on this machine at this moment. Also: the same recommendations through Feast's
retrieve_online_documents_v2 (the replaced system's path) and a cProfile of the in-process online path.

BENCH_SERVE_SECONDS sets each server's load time per client count (default 30 s; run in ROUNDS alternating parts
so a shared machine's changing load hits both servers alike); BENCH_SERVE_WORKERS the worker processes (default 2).
"""

from __future__ import annotations

import http.client
import json
import os
import random
import threading
import time
from pathlib import Path

import numpy as np
import psutil

from bench.common import RESULTS_DIR, ROOT, Goal, Result, percentiles_ms, table
from bench.env import env_float, load_note, quick, workspace
from bench.fixtures import SEED, FeastDocuments, fit_and_save, generate_data
from bench.serve_profile import profile
from recsys import schema
from recsys.contract import PREDICT_PATH
from recsys.predictor_process import RunningPredictor, running_predictor

CLIENTS = 16
MANY_CLIENTS = 64
K = 10
P99_GOAL_MS = 20.0
RPS_GOAL = 1500.0
NOOP_SHARE_GOAL = 0.70  # of the no-op's throughput
NOOP_P99_FACTOR_GOAL = 2.0  # times the no-op's p99
ROUNDS = 2
SERVER_START_TIMEOUT_S = 240  # each worker imports torch, KServe and Feast and loads the model


def sizes() -> dict:
    workers = int(env_float("BENCH_SERVE_WORKERS", 2))
    if quick():
        return {"data": {"n_users": 100, "n_items": 400, "n_interactions": 3000}, "epochs": 1, "seconds": 2.0,
                "single": 20, "feast": 10, "profile": 20, "workers": workers}  # fmt: skip
    return {
        "data": {"n_users": 1000, "n_items": 10_000, "n_interactions": 40_000},
        "epochs": 3,
        "seconds": env_float("BENCH_SERVE_SECONDS", 30.0),
        "single": 300,
        "feast": 100,
        "profile": 300,
        "workers": workers,
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


def one_answer(port: int, user_id: str) -> bytes:
    """A real V1 answer of ours (the no-op returns it to every call, so both send bodies of the same size)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("POST", PREDICT_PATH, body(user_id), {"Content-Type": "application/json"})
    response = conn.getresponse()
    payload = response.read()
    if response.status != 200:
        raise RuntimeError(f"the predictor answered {response.status}: {payload[:300]!r}")
    return payload


def measured_load(server: RunningPredictor, root: Path, users: list[str], clients: int, seconds: float) -> dict:
    """`load`, with the CPU the server (all its processes), its Postgres and the whole machine used meanwhile."""
    watched = {"server": with_children(psutil.Process(server.process.pid)), "postgres": our_postgres(root)}
    before = {name: cpu_seconds(procs) for name, procs in watched.items()}
    busy = machine_busy_s()
    result = load(server.port, users, clients, seconds)
    for name, procs in watched.items():
        result[f"{name}_cpu_s"] = cpu_seconds(procs) - before[name]
    result["machine_busy_s"] = machine_busy_s() - busy
    result["load_avg_1min"] = os.getloadavg()[0]
    return result


def merged(parts: list[dict]) -> dict:
    """One phase's figures from its rounds: requests and seconds add up, percentiles over every latency."""
    seconds = sum(p["seconds"] for p in parts)
    latencies = [s for p in parts for s in p["latencies_s"]]
    capacity = seconds * (os.cpu_count() or 1)
    return {
        "clients": parts[0]["clients"],
        "seconds": seconds,
        "requests": len(latencies),
        "errors": sum(p["errors"] for p in parts),
        "rps": len(latencies) / seconds,
        "latency_ms": percentiles_ms(latencies),
        "server_cores": sum(p["server_cpu_s"] for p in parts) / seconds,
        "postgres_cores": sum(p["postgres_cpu_s"] for p in parts) / seconds,
        "client_cores": sum(p["client_cpu_s"] for p in parts) / seconds,
        "machine_busy_share": sum(p["machine_busy_s"] for p in parts) / capacity,
        "load_avg_1min": [p["load_avg_1min"] for p in parts],
        "latencies_s": latencies,
    }


def compare(servers: dict[str, RunningPredictor], root: Path, users: list[str], seconds: float) -> dict:
    """Every server at each client count, in alternating rounds; {f"{name}_{clients}": merged figures}."""
    phases: dict[str, list[dict]] = {}
    for clients in (CLIENTS, MANY_CLIENTS):
        for server in servers.values():
            load(server.port, users, clients, min(3.0, seconds))  # warm-up: connections, caches, allocator
        for _ in range(ROUNDS):
            for name, server in servers.items():
                print(f"   serve: {name}, {clients} clients, {seconds / ROUNDS:.0f} s", flush=True)
                part = measured_load(server, root, users, clients, seconds / ROUNDS)
                phases.setdefault(f"{name}_{clients}", []).append(part)
    return {key: merged(parts) for key, parts in phases.items()}


def run() -> Result:
    started_under = load_note()
    sz = sizes()
    workers = ["--workers", str(sz["workers"])]
    with workspace("serve") as root:
        print("   serve: generate, feast apply/materialize, train, publish", flush=True)
        model_dir, users, publish_timings = prepare(root, sz)
        with running_predictor(
            model_dir, root / "serve.log", via_cli=True, cwd=ROOT, args=workers, ready_timeout_s=SERVER_START_TIMEOUT_S
        ) as ours:
            answer = root / "answer.json"
            answer.write_bytes(one_answer(ours.port, users[0]))
            with running_predictor(
                model_dir, root / "noop.log", module="bench.noop_predictor", cwd=ROOT,
                args=[*workers, "--answer", str(answer)], ready_timeout_s=SERVER_START_TIMEOUT_S,
            ) as noop:  # fmt: skip
                phases = compare({"recsys": ours, "noop": noop}, root, users, sz["seconds"])
            procs = with_children(psutil.Process(ours.process.pid))
            memory_mb = {  # unique pages (USS) do not count shared ones twice; RSS does
                "uss": sum(p.memory_full_info().uss for p in procs) / 2**20,
                "rss": sum(p.memory_info().rss for p in procs) / 2**20,
                "processes": len(procs),
            }
            client = Client(ours.port)
            single_s = [client.call(u)[0] for u in users[: sz["single"]]]
        print("   serve: Feast path and profile", flush=True)
        feast = feast_path(users[: sz["feast"]])
        prof = {f"batch_{b}": profile(model_dir, users[: sz["profile"]], b) for b in (1, CLIENTS)}
    latencies = phases[f"recsys_{CLIENTS}"]["latencies_s"]
    plot(latencies, RESULTS_DIR / "serve.png", phases[f"recsys_{CLIENTS}"])
    for phase in phases.values():
        phase.pop("latencies_s")
    data = {
        "sizes": sz,
        "phases": phases,
        "server_memory_mb": memory_mb,
        "one_client_latency_ms": percentiles_ms(single_s),
        "feast_path": feast,
        "profile": prof,
        "publish_timings_s": publish_timings,
        "load_note": started_under,
    }
    return Result(
        name="serve",
        title="Serving under load: recsys serve (KServe V1) next to a no-op KServe model, and the Feast v2 path",
        command=f"BENCH_SERVE_WORKERS={sz['workers']} python -m bench serve",
        markdown=markdown(data) + "\n\n" + started_under,
        goals=goals(data),
        data=data,
    )


def limits(d: dict) -> str:
    ours, noop = d["phases"][f"recsys_{CLIENTS}"], d["phases"][f"noop_{CLIENTS}"]
    batched = d["profile"][f"batch_{CLIENTS}"]
    return (
        f"CPU: {d['sizes']['workers']} workers used {ours['server_cores']:.2f} cores (the no-op's "
        f"{noop['server_cores']:.2f}), the clients {ours['client_cores']:.2f}, Postgres {ours['postgres_cores']:.2f}, "
        f"machine {ours['machine_busy_share']:.0%} busy (1-min load {max(ours['load_avg_1min']):.1f} on "
        f"{os.cpu_count()} cores, shared with other work); the no-op stack itself reached {noop['rps']:.0f} req/s; "
        f"recommend work in-process {batched['wall_ms_per_request_profiled']:.2f} ms per request at {CLIENTS} per call"
    )


def goals(d: dict) -> list[Goal]:
    ours, noop = d["phases"][f"recsys_{CLIENTS}"], d["phases"][f"noop_{CLIENTS}"]
    p99, rps = ours["latency_ms"]["p99"], ours["rps"]
    share, factor = rps / noop["rps"], p99 / noop["latency_ms"]["p99"]
    why = limits(d)
    return [
        Goal(
            figure=f"serve p99, {CLIENTS} clients",
            goal=f"<= {P99_GOAL_MS:g} ms",
            measured=f"{p99:.1f} ms (p50 {ours['latency_ms']['p50']:.1f})",
            met=p99 <= P99_GOAL_MS,
            limited_by="" if p99 <= P99_GOAL_MS else why,
        ),
        Goal(
            figure=f"serve throughput, {CLIENTS} clients",
            goal=f">= {RPS_GOAL:g} req/s, 0 errors",
            measured=f"{rps:.0f} req/s, {ours['errors']} errors",
            met=rps >= RPS_GOAL and ours["errors"] == 0,
            limited_by="" if rps >= RPS_GOAL and ours["errors"] == 0 else why,
        ),
        Goal(
            figure=f"serve throughput / no-op KServe model's, {CLIENTS} clients",
            goal=f">= {NOOP_SHARE_GOAL:.0%}",
            measured=f"{share:.0%} ({rps:.0f} / {noop['rps']:.0f} req/s)",
            met=share >= NOOP_SHARE_GOAL,
            limited_by="" if share >= NOOP_SHARE_GOAL else why,
        ),
        Goal(
            figure=f"serve p99 / no-op KServe model's p99, {CLIENTS} clients",
            goal=f"<= {NOOP_P99_FACTOR_GOAL:g}x",
            measured=f"{factor:.2f}x ({p99:.1f} / {noop['latency_ms']['p99']:.1f} ms)",
            met=factor <= NOOP_P99_FACTOR_GOAL,
            limited_by="" if factor <= NOOP_P99_FACTOR_GOAL else why,
        ),
    ]


def markdown(d: dict) -> str:
    phases, one, feast, prof = d["phases"], d["one_client_latency_ms"], d["feast_path"], d["profile"]
    data, workers = d["sizes"]["data"], d["sizes"]["workers"]
    labels = {"recsys": f"recsys serve --workers {workers}", "noop": f"no-op KServe model, --workers {workers}"}
    rows = []
    for key, ph in phases.items():
        name = labels[key.split("_")[0]]
        rows.append([f"{name}, {ph['clients']} clients", ph["requests"], ph["latency_ms"]["p50"],
                     ph["latency_ms"]["p95"], ph["latency_ms"]["p99"], f"{ph['rps']:.0f}", ph["errors"],
                     f"{ph['server_cores']:.2f}", f"{ph['client_cores']:.2f}",
                     " / ".join(f"{v:.1f}" for v in ph["load_avg_1min"])])  # fmt: skip
    rows.append([f"{labels['recsys']}, 1 client", one["n"], one["p50"], one["p95"], one["p99"],
                 f"{1000 / one['mean']:.0f}", 0, "", "", ""])  # fmt: skip
    rows.append(["Feast path (get_online_features + retrieve_online_documents_v2), in-process, 1 client",
                 feast["latency_ms"]["n"], feast["latency_ms"]["p50"], feast["latency_ms"]["p95"],
                 feast["latency_ms"]["p99"], f"{feast['rps_one_client']:.0f}", 0, "", "", ""])  # fmt: skip
    ratios = []
    for clients in (CLIENTS, MANY_CLIENTS):
        ours, noop = phases[f"recsys_{clients}"], phases[f"noop_{clients}"]
        ratios.append(
            f"{clients} clients: throughput {ours['rps'] / noop['rps']:.0%} of the no-op's, p99 "
            f"{ours['latency_ms']['p99'] / noop['latency_ms']['p99']:.2f}x the no-op's"
        )
    one_call, batched = prof["batch_1"], prof[f"batch_{CLIENTS}"]
    parts_ms = sorted(batched["per_request_ms"], key=lambda label: -batched["per_request_ms"][label])
    parts = [
        [label, f"{one_call['per_request_ms'].get(label, 0.0):.2f}", f"{batched['per_request_ms'][label]:.2f}"]
        for label in parts_ms
    ]
    parts.append(["whole recommend call, per request", f"{one_call['wall_ms_per_request_profiled']:.2f}",
                  f"{batched['wall_ms_per_request_profiled']:.2f}"])  # fmt: skip
    ours16 = phases[f"recsys_{CLIENTS}"]
    return "\n".join(
        [
            f"`recsys generate` {data['n_users']} users / {data['n_items']} items / {data['n_interactions']} "
            f"interactions, `feast apply` + `materialize`, training ({d['sizes']['epochs']} epochs), `recsys "
            f"publish`, then `recsys serve --workers {workers}` (KServe ModelServer, {workers} worker processes, "
            "exact retrieval, default filters) and, next to it, `python -m bench.noop_predictor --workers "
            f"{workers}`: the same server, workers and middleware serving a model whose predict returns one "
            "constant answer (a real answer of ours, so both send the same bytes). Each client thread holds one "
            f"keep-alive HTTP/1.1 connection on 127.0.0.1 and sends V1 requests for a random known user, k={K}, "
            f"back to back; {CLIENTS} clients, then {MANY_CLIENTS}; each server gets {d['sizes']['seconds']:.0f} s "
            f"per client count in {ROUNDS} alternating parts (so the load other work puts on this shared machine "
            "hits both alike). An answer without k items counts as an error. Cores = CPU seconds per second of "
            "the server's processes (parent + workers) and of the load generator; the last column is the 1-minute "
            "load average after each part.",
            "",
            table(
                [
                    "path",
                    "requests",
                    "p50 ms",
                    "p95 ms",
                    "p99 ms",
                    "req/s",
                    "errors",
                    "server cores",
                    "client cores",
                    "load avg",
                ],
                rows,
            ),  # fmt: skip
            "",
            "Same run, ours / the no-op's: " + "; ".join(ratios) + ". "
            f"At {CLIENTS} clients the machine was {ours16['machine_busy_share']:.0%} busy, Postgres used "
            f"{ours16['postgres_cores']:.2f} cores. The predictor's {d['server_memory_mb']['processes']} processes "
            f"(parent, workers, multiprocessing's resource tracker) held {d['server_memory_mb']['uss']:.0f} MB of "
            f"their own (USS; {d['server_memory_mb']['rss']:.0f} MB RSS summed, shared pages counted in each).",
            "",
            "![latency histogram](bench/results/serve.png)",
            "",
            "Within a worker, concurrent requests are merged into one `Recommender.recommend` call "
            "(serving.batching). Where a request's time goes: cProfile of `Recommender.recommend` in-process over "
            f"{one_call['requests']} users, one per call and {CLIENTS} per call (times under the profiler; parts "
            "overlap where one calls another):",
            "",
            table(["part", "ms per request, 1 user per call", f"ms per request, {CLIENTS} users per call"], parts),
            "",
            f"<details><summary>cProfile ({CLIENTS} users per call), top functions by cumulative time</summary>",
            "",
            "```",
            batched["top_cumulative"],
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
