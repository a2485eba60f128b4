"""User events against a real `recsys serve`: POST /v1/events throughput in batches of 100 and one per call, and
recommendation latency while events stream at 200/s (next to the same load without events, same run).

Every accepted event is committed to Postgres (log + history) before its 200. BENCH_EVENTS_SECONDS sets each
phase (default 20 s).
"""

from __future__ import annotations

import http.client
import json
import random
import threading
import time
from collections.abc import Callable

import pandas as pd

from bench.common import ROOT, Goal, Result, percentiles_ms, table
from bench.env import env_float, load_note, quick, workspace
from bench.serve import CLIENTS, P99_GOAL_MS, Client, load, prepare
from recsys import schema
from recsys.contract import EVENTS_PATH
from recsys.predictor_process import running_predictor

BATCH = 100
BATCH_GOAL_EPS = 2000.0
SINGLE_GOAL_EPS = 300.0
STREAM_EPS = 200.0
EVENT_CLIENTS = 8  # concurrent event senders in the throughput phases (concurrent commits share an fsync)
STREAM_SENDERS = 8  # paced senders sharing the 200/s stream
KINDS = (schema.POSITIVE_VIEW, schema.POSITIVE_VIEW, schema.CART, schema.PURCHASE, schema.NEGATIVE_VIEW)


def sizes() -> dict:
    if quick():
        return {"data": {"n_users": 100, "n_items": 400, "n_interactions": 3000}, "epochs": 1, "seconds": 2.0}
    return {
        "data": {"n_users": 1000, "n_items": 10_000, "n_interactions": 40_000},
        "epochs": 3,
        "seconds": env_float("BENCH_EVENTS_SECONDS", 20.0),
    }


class EventSender:
    """One keep-alive connection posting generated events; every id is fresh, so each one is accepted."""

    def __init__(self, port: int, prefix: str, users: list[str], items: list[str], seed: int):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        self.prefix, self.users, self.items = prefix, users, items
        self.rng = random.Random(seed)
        self.sent = 0

    def post(self, n: int) -> tuple[float, int, int]:
        """(seconds, status, accepted) of one call carrying n events."""
        events = []
        for _ in range(n):
            self.sent += 1
            events.append(
                {
                    "event_id": f"{self.prefix}-{self.sent}",
                    "user_id": self.rng.choice(self.users),
                    "item_id": self.rng.choice(self.items),
                    "interaction_type": self.rng.choice(KINDS),
                }
            )
        started = time.perf_counter()
        try:
            self.conn.request("POST", EVENTS_PATH, json.dumps({"events": events}), {"Content-Type": "application/json"})
            response = self.conn.getresponse()
            payload = response.read()
            accepted = json.loads(payload)["accepted"] if response.status == 200 else 0
            return time.perf_counter() - started, response.status, accepted
        except (OSError, http.client.HTTPException, ValueError, KeyError):
            self.conn.close()
            return time.perf_counter() - started, 0, 0


def _senders(port: int, n: int, tag: str, users: list[str], items: list[str]) -> list[EventSender]:
    return [EventSender(port, f"{tag}{i}", users, items, seed=sum(map(ord, tag)) * 100 + i) for i in range(n)]


def throughput(senders: list[EventSender], per_call: int, seconds: float) -> dict:
    """Each sender posts back to back for `seconds`; events/s counts accepted events only."""
    latencies: list[float] = []
    counts = {"calls": 0, "errors": 0, "accepted": 0}
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def work(sender: EventSender) -> None:
        while time.perf_counter() < deadline:
            took, status, accepted = sender.post(per_call)
            with lock:
                latencies.append(took)
                counts["calls"] += 1
                counts["accepted"] += accepted
                counts["errors"] += status != 200 or accepted != per_call

    started = time.perf_counter()
    _run_all([lambda s=s: work(s) for s in senders])
    wall = time.perf_counter() - started
    return {**counts, "senders": len(senders), "per_call": per_call, "seconds": wall,
            "events_per_s": counts["accepted"] / wall, "latency_ms": percentiles_ms(latencies)}  # fmt: skip


def paced_stream(senders: list[EventSender], rate: float, stop: threading.Event) -> dict:
    """One event per call at `rate` calls/s in total, spread over the senders, until `stop` is set."""
    counts = {"calls": 0, "errors": 0}
    lock = threading.Lock()
    interval = len(senders) / rate

    def work(sender: EventSender, offset: float) -> None:
        next_at = time.perf_counter() + offset
        while not stop.is_set():
            time.sleep(max(0.0, next_at - time.perf_counter()))
            _, status, accepted = sender.post(1)
            with lock:
                counts["calls"] += 1
                counts["errors"] += status != 200 or accepted != 1
            next_at += interval

    started = time.perf_counter()
    _run_all([lambda s=s, i=i: work(s, i * interval / len(senders)) for i, s in enumerate(senders)])
    wall = time.perf_counter() - started
    return {**counts, "seconds": wall, "events_per_s": counts["calls"] / wall}


def _run_all(jobs: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=job, daemon=True) for job in jobs]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()


def recommend_while_streaming(port: int, users: list[str], items: list[str], seconds: float) -> tuple[dict, dict]:
    stop = threading.Event()
    box: dict = {}
    streamer = threading.Thread(
        target=lambda: box.update(paced_stream(_senders(port, STREAM_SENDERS, "st", users, items), STREAM_EPS, stop)),
        daemon=True,
    )
    streamer.start()
    time.sleep(0.5)  # the stream is flowing before the clock starts
    loaded = load(port, users, CLIENTS, seconds)
    stop.set()
    streamer.join()
    return loaded, box


def run() -> Result:
    started_under = load_note()
    sz = sizes()
    with workspace("events") as root:
        print("   events: generate, feast apply/materialize, train, publish", flush=True)
        model_dir, users, _ = prepare(root, sz)
        items = pd.read_parquet(root / "feature_repo" / "data" / schema.ITEMS_FILE)[schema.ITEM_ID].tolist()
        with running_predictor(model_dir, root / "events.log", via_cli=True, cwd=ROOT) as server:
            port, seconds = server.port, sz["seconds"]
            Client(port).call(users[0])
            throughput(_senders(port, 1, "warm", users, items), BATCH, 1.0)
            print(f"   events: batches of {BATCH} for {seconds:.0f} s", flush=True)
            batched = throughput(_senders(port, EVENT_CLIENTS, "b", users, items), BATCH, seconds)
            print(f"   events: one per call for {seconds:.0f} s", flush=True)
            single = throughput(_senders(port, EVENT_CLIENTS, "s", users, items), 1, seconds)
            print(f"   events: recommendations alone, then with {STREAM_EPS:.0f} events/s, {seconds:.0f} s each")
            alone = load(port, users, CLIENTS, seconds)
            streaming, stream = recommend_while_streaming(port, users, items, seconds)
    for phase in (alone, streaming):
        phase.pop("latencies_s")
    data = {"sizes": sz, "batched": batched, "single": single, "alone": alone, "streaming": streaming, "stream": stream}
    return Result(
        name="events",
        title="User events: POST /v1/events (durable, applied online) and serving while they stream",
        command="python -m bench events",
        markdown=markdown(data) + "\n\n" + started_under,
        goals=goals(data),
        data=data,
    )


def goals(d: dict) -> list[Goal]:
    batched, single, streaming = d["batched"], d["single"], d["streaming"]
    p99, alone_p99 = streaming["latency_ms"]["p99"], d["alone"]["latency_ms"]["p99"]
    return [
        Goal(f"events accepted, batches of {BATCH}", f">= {BATCH_GOAL_EPS:g} events/s",
             f"{batched['events_per_s']:.0f} events/s, {batched['errors']} errors",
             batched["events_per_s"] >= BATCH_GOAL_EPS and batched["errors"] == 0,
             "" if batched["events_per_s"] >= BATCH_GOAL_EPS else _limit(batched)),
        Goal("events accepted, one per call", f">= {SINGLE_GOAL_EPS:g} events/s",
             f"{single['events_per_s']:.0f} events/s, {single['errors']} errors",
             single["events_per_s"] >= SINGLE_GOAL_EPS and single["errors"] == 0,
             "" if single["events_per_s"] >= SINGLE_GOAL_EPS else _limit(single)),
        Goal(f"serve p99 while events stream at {STREAM_EPS:g}/s, {CLIENTS} clients", f"<= {P99_GOAL_MS:g} ms",
             f"{p99:.1f} ms, events at {d['stream']['events_per_s']:.0f}/s (without events {alone_p99:.1f} ms)",
             p99 <= P99_GOAL_MS and d["stream"]["events_per_s"] >= 0.95 * STREAM_EPS,
             "" if p99 <= P99_GOAL_MS else f"CPU: the recommendations alone, same run, had p99 {alone_p99:.0f} ms "
             f"(events add {p99 - alone_p99:+.0f} ms); the paced stream reached {d['stream']['events_per_s']:.0f}/s"),
    ]  # fmt: skip


def _limit(phase: dict) -> str:
    return (
        f"{phase['senders']} senders, p50 {phase['latency_ms']['p50']:.1f} ms per call: one Python worker "
        "validates, commits (fsync) and answers each call"
    )


def markdown(d: dict) -> str:
    rows = [
        [f"batches of {BATCH}, {d['batched']['senders']} senders", d["batched"]["calls"],
         d["batched"]["latency_ms"]["p50"], d["batched"]["latency_ms"]["p99"],
         f"{d['batched']['events_per_s']:.0f}", d["batched"]["errors"]],
        [f"one per call, {d['single']['senders']} senders", d["single"]["calls"], d["single"]["latency_ms"]["p50"],
         d["single"]["latency_ms"]["p99"], f"{d['single']['events_per_s']:.0f}", d["single"]["errors"]],
    ]  # fmt: skip
    serve = [
        [f"{CLIENTS} clients, no events", d["alone"]["requests"], d["alone"]["latency_ms"]["p50"],
         d["alone"]["latency_ms"]["p99"], f"{d['alone']['rps']:.0f}", d["alone"]["errors"]],
        [f"{CLIENTS} clients, events at {d['stream']['events_per_s']:.0f}/s ({d['stream']['errors']} errors)",
         d["streaming"]["requests"], d["streaming"]["latency_ms"]["p50"], d["streaming"]["latency_ms"]["p99"],
         f"{d['streaming']['rps']:.0f}", d["streaming"]["errors"]],
    ]  # fmt: skip
    data = d["sizes"]["data"]
    return "\n".join(
        [
            f"{data['n_users']} users, {data['n_items']} items; one predictor process (`recsys serve`) on loopback, "
            f"{d['sizes']['seconds']:.0f} s per phase. Each call's events are validated, checked against the "
            "catalogue, logged and folded into the users' history in one committed transaction before the 200; "
            "the Feast push follows in the background.",
            "",
            table(["POST /v1/events", "calls", "p50 ms", "p99 ms", "events/s", "errors"], rows),
            "",
            table(["recommendations (V1)", "requests", "p50 ms", "p99 ms", "req/s", "errors"], serve),
        ]
    )
