"""`convcg up`: the whole loop on embedded defaults, on real data (MovieLens-100k).

1. A local broker (Tansu) and the project's topics.
2. Each component as its own process: the streams worker, the features sink and HTTP service
   (Feast on SQLite + parquet), the trainer service (model registry on disk), the index
   refresher and the retrieval service.
3. Warm-up: the first part of the log is replayed (served impressions = the log's own
   popularity-sampled ones); the trainer publishes the first model, the refresher builds its
   index and the retrieval service loads it.
4. Live: the rest of the log (but a held-out tail) is replayed in chunks; each rating's
   non-engaged impressions are now the items the *current* retriever serves that user; labels
   keep flowing, the trainer fine-tunes, the refresher hot-swaps indexes.
5. Report (stdout + `report.md` with plots): events, labels by kind, dead letters, versions,
   swaps, freshness percentiles, conversion recall@100 on the held-out tail before and after.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, replace
from pathlib import Path

import click

from loop.supervisor import Component, Supervisor, wait_until

log = logging.getLogger("convcg.up")


@dataclass
class LoopSettings:
    dataset: str = "movielens-100k"
    limit: int | None = None          # use only the first N events of the log
    warmup_fraction: float = 0.4      # replayed before the first model exists
    heldout_fraction: float = 0.1     # never replayed: evaluation only
    chunk_events: int = 20_000        # live replay granularity (served items refresh per chunk)
    trigger_labels: int = 20_000      # trainer fine-tunes after this many new labels...
    trigger_seconds: float = 20.0     # ...or this long
    served_per_user: int = 50         # candidates asked of the retriever per user
    chunk_pause_s: float = 2.0        # live time between chunks (lets fine-tunes and swaps land)
    timeout_s: float = 1800.0


def _get_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read())


class ServedItems:
    """The items the current retriever serves each user (cached per model version)."""

    def __init__(self, retrieval_url: str, k: int) -> None:
        self.url, self.k = retrieval_url, k
        self.cache: dict[str, list[str]] = {}
        self.version: str | None = None
        self.queries = 0
        self.failures = 0

    def for_user(self, user_id: str) -> list[str]:
        items = self.cache.get(user_id)
        if items is None:
            q = urllib.parse.urlencode({"user_id": user_id, "k": self.k, "surface": "home"})
            try:
                body = _get_json(f"{self.url}/retrieve?{q}")
                items = [hit["item_id"] for hit in body["items"]]
                self.queries += 1
            except OSError:
                self.failures += 1
                items = []
            self.cache[user_id] = items
        return items

    def refresh(self, version: str | None) -> None:
        if version != self.version:
            self.cache.clear()
            self.version = version


def _is_unengaged_slot(impression_id: str) -> bool:
    """MovieLens impressions named ``imp-<user>-<item>-n<j>`` are the served, not-rated slots."""
    last = impression_id.rsplit("-", 1)[-1]
    return last[:1] == "n" and last[1:].isdigit()


def serve_negatives(events, served: ServedItems, advertiser_of: dict[str, str]):
    """Replace each rating's non-engaged impressions by the retriever's picks for that user
    (first ones the user was not shown yet); ids and times stay, so the log stays replayable."""
    from convcg.contract import Impression

    shown: dict[str, set[str]] = {}
    out = []
    for e in events:
        if isinstance(e, Impression):
            seen = shown.setdefault(e.user_id, set())
            if _is_unengaged_slot(e.impression_id):
                pick = next((i for i in served.for_user(e.user_id) if i not in seen), None)
                if pick is not None:
                    e = replace(e, item_id=pick, advertiser_id=advertiser_of.get(pick, e.advertiser_id))
            seen.add(e.item_id)
        out.append(e)
    return out


def run_loop(home: Path, settings: LoopSettings) -> dict:

    from convcg.broker import create_topics, find_or_start_broker, free_port
    from convcg.contract import Topics
    from convcg.kafka_io import read_topic
    from loop.report import write_report
    from streams.datasets import load_log
    from streams.datasets.event_log import EventLog
    from streams.labels import count_by_kind, dedupe
    from streams.replay import replay, write_catalog

    home.mkdir(parents=True, exist_ok=True)
    logs = home / "logs"
    t_start = time.monotonic()
    full = load_log(settings.dataset)
    events = full.events[: settings.limit] if settings.limit else full.events
    n = len(events)
    n_warm = int(n * settings.warmup_fraction)
    n_live_end = int(n * (1 - settings.heldout_fraction))
    warm, live, heldout = events[:n_warm], events[n_warm:n_live_end], events[n_live_end:]
    click.echo(f"{settings.dataset}: {n:,} events -> warm-up {len(warm):,}, live {len(live):,}, "
               f"held out {len(heldout):,}")

    catalog_path = write_catalog(full, home / "catalog" / "items.parquet")
    broker = find_or_start_broker(log_path=home / "broker.log")
    topics = Topics()
    create_topics(broker.bootstrap, topics.all(), 3)
    ports = {name: free_port() for name in ("worker", "aggregates", "sink", "features", "trainer", "retrieval")}
    registry = home / "registry"
    common = {"KAFKA_BOOTSTRAP": broker.bootstrap}
    features_env = {**common, "CONVCG_FEATURES_REPO_DIR": str(home / "feast"),
                    "CONVCG_FEATURES_CATALOG_PATH": str(catalog_path)}
    index_env = {**common, "CONVCG_INDEX_REGISTRY_ROOT": str(registry), "CONVCG_INDEX_CATALOG_PATH": str(catalog_path),
                 "CONVCG_INDEX_INDEX_ROOT": str(registry / "indexes"),
                 "CONVCG_INDEX_NEW_ITEMS_PATH": str(home / "index_refresher" / "new_items.parquet"),
                 "CONVCG_INDEX_RETRIEVAL_URL": f"http://127.0.0.1:{ports['retrieval']}",
                 "CONVCG_INDEX_FEATURES_URL": f"http://127.0.0.1:{ports['features']}",
                 "CONVCG_INDEX_POLL_INTERVAL_S": "2"}
    sup = Supervisor()
    try:
        subprocess_apply = Component("features-apply", ["features", "apply"], features_env, logs / "features-apply.log")
        subprocess_apply.start().process.wait()
        worker = sup.start(Component("streams-worker", ["worker", "--metrics-port", str(ports["worker"])],
                                     {**common, "CONVCG_STREAMS_BOOTSTRAP": broker.bootstrap},
                                     logs / "streams-worker.log", ports["worker"]))
        sup.start(Component("streams-aggregates", ["aggregates", "--metrics-port", str(ports["aggregates"])],
                            {**common, "CONVCG_STREAMS_BOOTSTRAP": broker.bootstrap},
                            logs / "streams-aggregates.log", ports["aggregates"]))
        sink = sup.start(Component("features-sink", ["features", "sink", "--bootstrap", broker.bootstrap,
                                                     "--metrics-port", str(ports["sink"])],
                                   features_env, logs / "features-sink.log", ports["sink"]))
        sup.start(Component("features-serve", ["features", "serve", "--port", str(ports["features"])],
                            features_env, logs / "features-serve.log"))
        trainer = sup.start(Component(
            "trainer", ["trainer", "--bootstrap", broker.bootstrap, "--registry", str(registry),
                        "--trigger-labels", str(settings.trigger_labels),
                        "--trigger-seconds", str(settings.trigger_seconds), "--metrics-port", str(ports["trainer"])],
            {**common, "CONVCG_TRAINING_CATALOG_PATH": str(catalog_path),
             "CONVCG_TRAINING_LABEL_STORE": str(home / "training" / "labels"),
             "CONVCG_TRAINING_REPORTS_DIR": str(home / "reports")},
            logs / "trainer.log", ports["trainer"]))
        retrieval = sup.start(Component("retrieval", ["retrieval", "serve", "--port", str(ports["retrieval"])],
                                        index_env, logs / "retrieval.log", ports["retrieval"]))
        sup.start(Component("refresher", ["refresher", "--bootstrap", broker.bootstrap], index_env,
                            logs / "refresher.log"))

        # --- warm-up -----------------------------------------------------------------------
        click.echo("warm-up: replaying the first part of the log (no model yet)")
        replay(EventLog(full.name, warm, full.catalog), broker.bootstrap, topics)
        status_url = f"http://127.0.0.1:{ports['retrieval']}/admin/status"

        def serving_version():
            try:
                s = _get_json(status_url)["serving"]
                return s and s.get("model_version")
            except (OSError, KeyError, TypeError, ValueError):
                return None

        before = wait_until(serving_version, settings.timeout_s, "the first model to be trained, indexed and served",
                            interval=1.0, supervisor=sup)
        click.echo(f"first model {before} is serving; live phase starts")

        # --- live ----------------------------------------------------------------------------
        served = ServedItems(f"http://127.0.0.1:{ports['retrieval']}", settings.served_per_user)
        advertiser_of = dict(zip(full.catalog["item_id"], full.catalog["advertiser_id"]))
        versions_seen = [before]
        from tqdm import tqdm

        with tqdm(total=len(live), desc="live replay", unit="ev") as bar:
            for i in range(0, len(live), settings.chunk_events):
                sup.check()
                version = serving_version() or served.version
                served.refresh(version)
                if version and version not in versions_seen:
                    versions_seen.append(version)
                chunk = serve_negatives(live[i:i + settings.chunk_events], served, advertiser_of)
                replay(EventLog(full.name, chunk, full.catalog), broker.bootstrap, topics, progress=False)
                produced = len(warm) + i + len(chunk)
                # pace the live stream with the pipeline, so models and indexes change under it
                wait_until(lambda: worker.metric_sum("convcg_stream_events_total") >= produced, settings.timeout_s,
                           "the worker to catch up", interval=0.2, supervisor=sup)
                time.sleep(settings.chunk_pause_s)
                bar.update(len(chunk))
                bar.set_postfix(serving=version, labels=int(worker.metric_sum("convcg_stream_labels_total")))
        replayed = len(warm) + len(live)
        wait_until(lambda: worker.metric_sum("convcg_stream_events_total") >= replayed, settings.timeout_s,
                   "the worker to consume every replayed event", supervisor=sup)
        # let the trainer take its last step and the refresher swap it in
        labels_emitted = worker.metric_sum("convcg_stream_labels_total")
        wait_until(lambda: trainer.metric_sum("convcg_trainer_labels_consumed_total")
                   + trainer.metric_sum("convcg_trainer_labels_duplicate_total") >= labels_emitted,
                   settings.timeout_s, "the trainer to read every label", supervisor=sup)
        time.sleep(settings.trigger_seconds + 5)
        from registry.store import ModelRegistry

        reg = ModelRegistry(registry)
        final = reg.current_version()
        wait_until(lambda: serving_version() == final, 300, f"the retrieval service to serve {final}",
                   supervisor=sup)

        # --- report --------------------------------------------------------------------------
        raw_labels = read_topic(broker.bootstrap, topics.labels, timeout=60)
        labels = dedupe(raw_labels)
        dead = read_topic(broker.bootstrap, topics.dead_letters, timeout=30)
        freshness = {k: v for k, v in sink.metrics().items() if k.startswith("convcg_features_freshness_seconds")}
        swaps = retrieval.metric_sum("convcg_retrieval_swaps_total")
        summary = {
            "dataset": settings.dataset, "events_replayed": replayed, "events_held_out": len(heldout),
            "events_processed": worker.metric_sum("convcg_stream_events_total"),
            "labels_by_kind": count_by_kind(labels), "labels_redelivered": len(raw_labels) - len(labels),
            "dead_letters": len(dead), "model_versions": reg.versions(), "model_before": before,
            "model_after": final, "index_swaps": swaps, "retriever_queries": served.queries,
            "retriever_query_failures": served.failures, "wall_seconds": round(time.monotonic() - t_start, 1),
        }
        write_report(home, summary, events, n_live_end, full.catalog, reg, freshness)
        return summary
    finally:
        sup.stop_all()
        broker.stop()


@click.command("up")
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="Run folder (default var/up/<timestamp>).")
@click.option("--limit", type=int, default=None, help="Use only the first N events of MovieLens-100k.")
@click.option("--trigger-labels", type=int, default=LoopSettings.trigger_labels, show_default=True)
@click.option("--chunk-events", type=int, default=LoopSettings.chunk_events, show_default=True)
def up_command(home: Path | None, limit: int | None, trigger_labels: int, chunk_events: int) -> None:
    """Run the whole loop end to end on embedded defaults and print a report."""
    home = home or Path("var/up") / time.strftime("%Y%m%d-%H%M%S")
    settings = LoopSettings(limit=limit, trigger_labels=trigger_labels, chunk_events=chunk_events)
    summary = run_loop(home, settings)
    click.echo(json.dumps(summary, indent=2))
    click.echo(f"report: {home / 'report.md'}")
