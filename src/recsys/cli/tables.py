"""Every table the command line prints, built in one place so the same numbers always look the same."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.table import Table

from recsys import schema
from recsys.contract import GATE_METRIC

if TYPE_CHECKING:
    from pipelines.runner import LocalRun
    from recsys.data.generate import GenerationReport
    from recsys.data.movielens import ImportReport
    from recsys.model_store import StoredModel
    from recsys.publish import PublishReport

SUMMARY_METRICS = (GATE_METRIC, "ndcg@10")  # the two a pipeline run's summary shows
RECOMMENDATION_COLUMNS = ("rank", schema.ITEM_ID, "score", schema.PRODUCT_NAME, schema.CATEGORY)


def metrics_table(
    title: str, systems: Mapping[str, Mapping[str, float]], metrics: Sequence[str] | None = None
) -> Table:
    """One row per metric, one column per ranker (model and baselines); `metrics` default: the first ranker's."""
    table = Table(title=title)
    table.add_column("metric")
    for name in systems:
        table.add_column(name, justify="right")
    for metric in metrics or next(iter(systems.values()), {}):
        table.add_row(metric, *(f"{values[metric]:.4f}" for values in systems.values()))
    return table


def split_metrics_table(split: str, result: Mapping[str, Any], systems: Mapping[str, Mapping[str, float]]) -> Table:
    """Test-part metrics of one evaluation (metrics.json of train, or `recsys evaluate`)."""
    users = result["details"]["users_evaluated"]
    return metrics_table(f"{split} split: test part, {users:,} users, full ranking", systems)


def ranker_metrics(metrics: dict) -> dict[str, dict[str, float]]:
    """metrics.json -> one entry per ranker: the served model (two-tower + rerank), the towers alone, baselines."""
    model = {"served": metrics["model"]} if "model" in metrics else {}
    towers = {"towers alone": metrics["retrieval"]} if "retrieval" in metrics else {}
    return model | towers | metrics["baselines"]


def pipeline_run_table(run: LocalRun) -> Table:
    """The model against the baselines on the gate metric and NDCG@10, as a pipeline run measured them."""
    systems = ranker_metrics(run.metrics)
    return metrics_table(f"pipeline run in {run.seconds:.0f} s, model {run.model_version}", systems, SUMMARY_METRICS)


def generation_table(report: GenerationReport, target: Path) -> Table:
    table = Table(title=f"synthetic data in {target} ({report.seconds:.2f} s)")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for name, rows in zip(report.paths, (report.n_users, report.n_items, report.n_interactions), strict=True):
        table.add_row(name, f"{rows:,}")
    return table


def import_table(report: ImportReport, target: Path) -> Table:
    table = Table(title=f"MovieLens ({report.source_format} files) in {target}")
    table.add_column("file")
    table.add_column("rows", justify="right")
    for name, rows in zip(report.paths, (report.n_users, report.n_items, report.n_interactions), strict=True):
        table.add_row(name, f"{rows:,}")
    return table


def publish_table(report: PublishReport) -> Table:
    table = Table(title=f"published model {report.model_version} (live: {report.live_model_version})")
    table.add_column("written to")
    table.add_column("rows", justify="right")
    table.add_column("notes")
    for name, result in (("pgvector items", report.item_vectors), ("pgvector text", report.text_vectors)):
        build = "index existed" if result.index_build_s is None else f"HNSW built in {result.index_build_s:.2f} s"
        notes = f"{result.written:,} changed, {result.deleted:,} removed; COPY {result.copy_rows_per_s:,.0f} rows/s; {build}"
        table.add_row(name, f"{report.items:,}", notes)
    for view, rows in report.feast_rows.items():
        table.add_row(f"Feast {view}", f"{rows:,}", f"{report.timings_s[f'feast_{view}_s']:.2f} s")
    table.add_row("user history", f"{report.history_users:,}", "")
    return table


def recommendations_table(label: str, prediction: Mapping[str, Any]) -> Table:
    """One prediction of the V1 protocol, best item first."""
    table = Table(title=f"{label} (cold start: {prediction.get('cold_start')})")
    for column in RECOMMENDATION_COLUMNS:
        table.add_column(column)
    for rank, item in enumerate(prediction["items"], start=1):
        table.add_row(
            str(rank),
            item[schema.ITEM_ID],
            f"{item['score']:.3f}",
            str(item.get(schema.PRODUCT_NAME, "")),
            str(item.get(schema.CATEGORY, "")),
        )
    return table


def models_table(models: Sequence[StoredModel], live: str | None) -> Table:
    """The model store, oldest first, with the test metrics of each version and the live one marked."""
    table = Table(title="model store")
    for column in ("model_version", "trained (UTC)", *SUMMARY_METRICS, "live"):
        table.add_column(column, justify="right" if column in SUMMARY_METRICS else "left")
    for model in models:
        metrics = (f"{model.metrics[m]:.4f}" if m in model.metrics else "-" for m in SUMMARY_METRICS)
        marker = "live" if model.model_version == live else ""
        table.add_row(model.model_version, model.trained_at.strftime("%Y-%m-%d %H:%M:%S"), *metrics, marker)
    return table
