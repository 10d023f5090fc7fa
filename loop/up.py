"""`convcg up`: the whole loop on embedded defaults, on real data (MovieLens-100k).

1. A local Apache Kafka broker (its data in the run folder's ``kafka/``) and the project's topics.
2. Each component as its own process: the streams worker, the features sink and HTTP service
   (Feast: a private Redis or SQLite online store + parquet), the trainer service (model registry on disk), the index
   refresher and the retrieval service.
3. Warm-up: the first part of the log is replayed (served impressions = the log's own
   popularity-sampled ones); the trainer publishes the first model, the refresher builds its
   index and the retrieval service loads it.
4. Live: the rest of the log (but a held-out tail) is replayed at a steady ``rate`` events
   per wall second (``loop.pacing``); each rating's non-engaged impressions are the items the
   *current* retriever serves that user; the trainer fine-tunes and the refresher hot-swaps
   indexes while the stream flows (it never stops to wait for them).
5. Report (stdout + `report.md` with plots): events, labels by kind, dead letters, versions,
   swaps, the pace (rate, event time per wall second), measured freshness of features (probes
   looked up over HTTP), labels and models, and retrieval quality on the held-out tail under
   the point-in-time protocol: every model version beside popularity, item-kNN and EASE fit
   in the same run, on the same queries (``loop.report``; the static protocol as a second
   column).
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import click

from convcg.cli_options import online_store_option, redis_option
from convcg.contract import MetricNames as M
from convcg.metrics_scrape import metric_sum
from loop.online_store import StoreChoice
from loop.supervisor import Component, Supervisor, wait_until

log = logging.getLogger(__name__)

#: live replay rate (raw events/s): what the embedded default store keeps fresh on 2 cores with
#: every other component (trainer, refresher, retrieval) sharing them
DEFAULT_RATE = 2000.0


#: registry retention inside a `convcg up` run: every version it makes
KEEP_EVERY_VERSION = 100_000


@dataclass
class LoopSettings:
    dataset: str = "movielens-100k"
    limit: int | None = None          # use only the first N events of the log
    warmup_fraction: float = 0.4      # replayed before the first model exists
    heldout_fraction: float = 0.1     # never replayed: evaluation only
    rate: float = DEFAULT_RATE        # live replay: raw events per wall second, steady
    producer_linger_ms: int = 5          # the live replay's producer (probes included)
    #: where the retrieval service reads a query's user features: ``store``, the features
    #: component's Feast store opened in-process, queries answered on the event loop (the
    #: fastest path in ``bench.system.retrieval_online``: one process hop less); ``http``, the features service
    retrieval_features_source: Literal["store", "http"] = "store"
    online_store: StoreChoice = "auto"  # auto: private redis-server if on PATH, else SQLite
    redis: str | None = None          # HOST:PORT of an existing Redis to use instead
    trigger_labels: int = 10_000      # trainer fine-tunes after this many new labels...
    trigger_seconds: float = 10.0     # ...or this long
    served_per_user: int = 50         # candidates asked of the retriever per user
    probe_interval_s: float = 0.1     # one feature-freshness probe this often
    probe_poll_s: float = 0.02        # pending probes looked up this often (the resolution)
    status_poll_s: float = 0.5        # how often the serving model version is checked
    timeout_s: float = 1800.0


def _get_json(url: str, timeout: float = 5.0, token: str = ""):
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
        return json.loads(r.read())



class VersionWatch:
    """Polls the retrieval service's serving model version in a thread; remembers when each
    version first served (model freshness) and tells ``on_new`` about it. ``/admin/status`` is
    behind the service's admin token when one is set: ``token`` is sent with every poll."""

    def __init__(self, status_url: str, interval_s: float, on_new=lambda v: None, token: str = "") -> None:
        self.url, self.interval_s, self.on_new, self.token = status_url, interval_s, on_new, token
        self.serving_since: dict[str, float] = {}
        self.current: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="version-watch", daemon=True)

    def poll(self) -> str | None:
        try:
            s = _get_json(self.url, token=self.token)["serving"]
            version = s and s.get("model_version")
        except (OSError, KeyError, TypeError, ValueError):
            return self.current
        if version and version not in self.serving_since:
            self.serving_since[version] = time.time()
            self.on_new(version)
        self.current = version or self.current
        return self.current

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def start(self) -> "VersionWatch":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(10)


def run_loop(home: Path, settings: LoopSettings) -> dict:
    from convcg.contract import Topics
    from convcg.kafka.broker import create_topics, find_or_start_broker, free_port
    from loop.online_store import start_online_store
    from streams.replay.datasets import load_log

    home.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    full = load_log(settings.dataset)
    events = full.events[: settings.limit] if settings.limit else full.events
    n = len(events)
    n_warm = int(n * settings.warmup_fraction)
    n_live_end = int(n * (1 - settings.heldout_fraction))
    click.echo(f"{settings.dataset}: {n:,} events -> warm-up {n_warm:,}, live {n_live_end - n_warm:,}, "
               f"held out {n - n_live_end:,}; live rate {settings.rate:,.0f} events/s")
    online = start_online_store(settings.online_store, home, settings.redis)
    click.echo(f"online store: {online.describe()}")
    broker = find_or_start_broker(data_dir=home / "kafka", log_path=home / "broker.log")
    try:
        topics = Topics()
        create_topics(broker.bootstrap, topics.all(), 3)
        ports = {name: free_port() for name in ("worker", "aggregates", "sink", "features", "trainer", "retrieval")}
        summary = _run_components(home, settings, full, events, n_warm, n_live_end, broker.bootstrap, topics,
                                  ports, online)
        summary["wall_seconds"] = round(time.monotonic() - t_start, 1)
        (home / "summary.json").write_text(json.dumps(summary, indent=2, default=str))
        return summary
    finally:
        broker.stop()
        online.stop()


def _run_components(home, settings: LoopSettings, full, events, n_warm: int, n_live_end: int, bootstrap: str,
                    topics, ports: dict, online) -> dict:
    from registry.store import ModelRegistry
    from streams.replay.datasets.event_log import EventLog
    from streams.replay.replay import replay, write_catalog

    logs = home / "logs"
    warm, live = events[:n_warm], events[n_warm:n_live_end]
    catalog_path = write_catalog(full, home / "catalog" / "items.parquet")
    registry = home / "registry"
    # the report grades every version of the run and times each served one: keep them all (a run
    # is bounded; a long-lived deployment keeps the registry's default retention)
    common = {"KAFKA_BOOTSTRAP": bootstrap, "CONVCG_REGISTRY_KEEP_VERSIONS": str(KEEP_EVERY_VERSION)}
    features_env = {**common, **online.env, "CONVCG_FEATURES_REPO_DIR": str(home / "feast"),
                    "CONVCG_FEATURES_CATALOG_PATH": str(catalog_path)}
    admin_token = secrets.token_urlsafe(24)
    index_env = {**common, "CONVCG_INDEX_REGISTRY_ROOT": str(registry), "CONVCG_INDEX_CATALOG_PATH": str(catalog_path),
                 "CONVCG_INDEX_INDEX_ROOT": str(registry / "indexes"),
                 "CONVCG_INDEX_NEW_ITEMS_PATH": str(home / "index_refresher" / "new_items.parquet"),
                 "CONVCG_INDEX_RETRIEVAL_URL": f"http://127.0.0.1:{ports['retrieval']}",
                 "CONVCG_INDEX_FEATURES_URL": f"http://127.0.0.1:{ports['features']}",
                 "CONVCG_INDEX_POLL_INTERVAL_S": "0.5",
                 # the refresher's admin calls and the status the version watch reads need it
                 "CONVCG_INDEX_ADMIN_TOKEN": admin_token}
    if settings.retrieval_features_source == "store":
        index_env.update({"CONVCG_INDEX_FEATURES_SOURCE": "store", "CONVCG_INDEX_FEATURES_REPO": str(home / "feast"),
                          "CONVCG_INDEX_INLINE_QUERIES": "1"})
    sup = Supervisor()
    try:
        Component("features-apply", ["features", "apply"], features_env, logs / "features-apply.log").start().process.wait()
        worker = sup.start(Component("streams-worker", ["worker", "--metrics-port", str(ports["worker"])],
                                     {**common, "CONVCG_STREAMS_KAFKA__BOOTSTRAP": bootstrap},
                                     logs / "streams-worker.log", ports["worker"]))
        aggregates = sup.start(Component("streams-aggregates", ["aggregates", "--metrics-port", str(ports["aggregates"])],
                            {**common, "CONVCG_STREAMS_KAFKA__BOOTSTRAP": bootstrap},
                            logs / "streams-aggregates.log", ports["aggregates"]))
        sink = sup.start(Component("features-sink", ["features", "sink", "--bootstrap", bootstrap,
                                                     "--metrics-port", str(ports["sink"])],
                                   features_env, logs / "features-sink.log", ports["sink"]))
        sup.start(Component("features-serve", ["features", "serve", "--port", str(ports["features"])],
                            features_env, logs / "features-serve.log"))
        trainer = sup.start(Component(
            "trainer", ["trainer", "--bootstrap", bootstrap, "--registry", str(registry),
                        "--trigger-labels", str(settings.trigger_labels),
                        "--trigger-seconds", str(settings.trigger_seconds), "--metrics-port", str(ports["trainer"])],
            {**common, "CONVCG_TRAINING_CATALOG_PATH": str(catalog_path),
             "CONVCG_TRAINING_LABEL_STORE": str(home / "training" / "labels"),
             "CONVCG_TRAINING_REPORTS_DIR": str(home / "reports")},
            logs / "trainer.log", ports["trainer"]))
        retrieval = sup.start(Component("retrieval", ["retrieval", "serve", "--port", str(ports["retrieval"])],
                                        index_env, logs / "retrieval.log", ports["retrieval"]))
        sup.start(Component("refresher", ["refresher", "--bootstrap", bootstrap], index_env,
                            logs / "refresher.log"))

        def trainer_has_read(labels: float) -> bool:
            return (trainer.metric_sum(M.total(M.LABELS_TRAINED_ON))
                    + trainer.metric_sum(M.total(M.LABELS_REDELIVERED))) >= labels

        def trainer_idle(*gauges: str) -> bool:  # one scrape: a step that collects a retrain may start the next
            samples = trainer.metrics()  # none: the trainer did not answer, not idle
            return bool(samples) and all(metric_sum(samples, name) == 0 for name in gauges)

        # --- warm-up -----------------------------------------------------------------------
        click.echo("warm-up: replaying the first part of the log (no model yet)")
        replay(EventLog(full.name, warm, full.catalog), bootstrap, topics)
        watch = VersionWatch(f"http://127.0.0.1:{ports['retrieval']}/admin/status", settings.status_poll_s,
                             token=admin_token)
        before = wait_until(watch.poll, settings.timeout_s, "the first model to be trained, indexed and served",
                            interval=1.0, supervisor=sup)
        # the live phase measures freshness of a stream the pipeline keeps up with: start it once
        # the label join and the aggregates have consumed the warm-up backlog
        wait_until(lambda: min(worker.metric_sum(M.total(M.EVENTS_JOINED)),
                               aggregates.metric_sum(M.total(M.EVENTS_AGGREGATED))) >= len(warm),
                   settings.timeout_s, "the worker and the aggregates to consume the warm-up", interval=0.5,
                   supervisor=sup)
        # ...and once the trainer has trained on the warm-up's labels (its step over that backlog
        # would otherwise hold the first live labels back; a retrain may go on in the background)
        wait_until(lambda: trainer_has_read(worker.metric_sum(M.total(M.LABELS_EMITTED)))
                   and trainer_idle(M.TRAINER_STEPPING, M.TRAINER_PENDING),
                   settings.timeout_s, "the trainer to train on the warm-up's labels", interval=0.5, supervisor=sup)
        click.echo(f"first model {before} is serving and the warm-up is consumed; live phase starts")

        # --- live ----------------------------------------------------------------------------
        live_result = _live_phase(settings, full, warm, live, bootstrap, topics, ports, sup, watch, before)
        replayed = len(warm) + live_result["pace"].sent
        wait_until(lambda: worker.metric_sum(M.total(M.EVENTS_JOINED)) >= replayed, settings.timeout_s,
                   "the worker to consume every replayed event", supervisor=sup)
        # let the trainer take its last step and the refresher swap it in (the watch keeps
        # recording when each version starts serving)
        labels_emitted = worker.metric_sum(M.total(M.LABELS_EMITTED))
        wait_until(lambda: trainer_has_read(labels_emitted), settings.timeout_s, "the trainer to read every label",
                   supervisor=sup)
        idle = (M.TRAINER_RETRAINING, M.TRAINER_STEPPING, M.TRAINER_PENDING)
        wait_until(lambda: trainer_idle(*idle), settings.timeout_s, "the trainer's background retrain and last step",
                   supervisor=sup)
        time.sleep(settings.trigger_seconds + 5)  # a step on the time trigger
        wait_until(lambda: trainer_idle(*idle), settings.timeout_s, "the trainer's last step", supervisor=sup)
        reg = ModelRegistry(registry)
        final = reg.current_version()
        wait_until(lambda: watch.current == final, 300, f"the retrieval service to serve {final}", supervisor=sup)
        live_result["probes"].wait_pending(10)
        live_result["probes"].stop()
        watch.stop()
        return _report(home, settings, full, events, n_live_end, bootstrap, topics, reg, watch, live_result,
                       worker, sink, retrieval, before, final, replayed)
    finally:
        sup.stop_all()


def _live_phase(settings: LoopSettings, full, warm, live, bootstrap: str, topics, ports: dict, sup, watch, before):
    """Send ``live`` at ``settings.rate`` in a thread; meanwhile new model versions are picked up
    (served items refreshed in the background) and the components are supervised."""
    from loop.live import LiveSender, ServedItems
    from loop.pacing import SteadyPacer
    from loop.probes import FeatureProbes, ProbePicker

    users = sorted({e.user_id for e in live})
    sender: LiveSender | None = None

    def replay_time() -> float:
        """The replay's event time: the newest event sent (the warm-up's last before the live phase)."""
        latest = sender.sends.latest() if sender is not None else None
        return latest if latest is not None else warm[-1].ts

    served = ServedItems(f"http://127.0.0.1:{ports['retrieval']}", settings.served_per_user, users, replay_time)
    served.load(before)
    watch.on_new = served.refresh_in_background
    watch.start()
    probes = FeatureProbes(f"http://127.0.0.1:{ports['features']}", poll_s=settings.probe_poll_s).start()
    picker = ProbePicker(settings.probe_interval_s)
    for e in warm:
        picker.observe(e.user_id, e.ts)
    advertiser_of = dict(zip(full.catalog["item_id"], full.catalog["advertiser_id"]))
    sender = LiveSender(bootstrap, topics, served, advertiser_of, probes, picker, settings.producer_linger_ms)
    failed = threading.Event()
    pacer = SteadyPacer(live, settings.rate, sender, should_stop=failed.is_set)
    result: dict = {}
    live_start = time.time()
    thread = threading.Thread(target=lambda: result.update(pace=pacer.run()), name="live-replay", daemon=True)
    from tqdm import tqdm

    with tqdm(total=len(live), desc=f"live replay @ {settings.rate:,.0f}/s", unit="ev") as bar:
        thread.start()
        try:
            while thread.is_alive():
                thread.join(1.0)
                sup.check()
                bar.update(pacer.sent - bar.n)
                bar.set_postfix(serving=watch.current, probes=len(probes.delays))
        except BaseException:
            failed.set()
            thread.join(10)
            raise
    sender.close()
    if sender.errors:
        raise RuntimeError(f"live replay: {len(sender.errors)} events not delivered, e.g. {sender.errors[0]}")
    return {"pace": result["pace"], "probes": probes, "sends": sender.sends, "served": served,
            "live_start": live_start}


def _report(home, settings: LoopSettings, full, events, n_live_end: int, bootstrap: str, topics, reg, watch,
            live_result: dict, worker, sink, retrieval, before, final, replayed: int) -> dict:
    from convcg.kafka.io import read_topic
    from loop.freshness import exact_percentiles
    from loop.measures import label_and_model_freshness
    from loop.report import write_report
    from streams.label_join.labels import count_by_kind, dedupe

    raw = read_topic(bootstrap, topics.labels, timeout=60, decode=False)
    raw_labels = [json.loads(r.value) for r in raw]
    labels = dedupe(raw_labels)
    dead = read_topic(bootstrap, topics.dead_letters, timeout=30)
    histogram = [s for s in sink.metrics() if s.name.startswith(M.FEATURE_FRESHNESS)]
    probes, served, pace = live_result["probes"], live_result["served"], live_result["pace"]
    label_fresh, model_fresh = label_and_model_freshness(raw, live_result["sends"], reg, watch.serving_since,
                                                         live_result["live_start"])
    summary = {
        "dataset": settings.dataset, "events_replayed": replayed, "events_held_out": len(events) - n_live_end,
        "events_processed": worker.metric_sum(M.total(M.EVENTS_JOINED)),
        "labels_by_kind": count_by_kind(labels), "labels_redelivered": len(raw_labels) - len(labels),
        "dead_letters": len(dead), "model_versions": reg.versions(), "model_before": before,
        "model_after": final, "model_versions_served": list(watch.serving_since),
        "index_swaps": retrieval.metric_sum(M.total(M.INDEX_SWAPS)),
        "retriever_queries": served.queries, "retriever_query_failures": served.failures,
        "retriever_feature_source": settings.retrieval_features_source,
        "retriever_feature_reads": retrieval.metric_sum(f"{M.USER_FEATURE_READS}_count"),
        "retriever_feature_read_failures": retrieval.metric_sum(M.total(M.USER_FEATURE_READ_FAILURES)),
        "live_pace": {**pace.as_dict(), "producer_linger_ms": settings.producer_linger_ms},
        "feature_freshness_seconds": {**exact_percentiles(probes.delays), "never_visible": probes.lost,
                                      "lookup_errors": probes.lookup_errors},
        "label_freshness_seconds": label_fresh, "model_freshness_seconds": model_fresh,
    }
    write_report(home, summary, events, n_live_end, full.catalog, reg, histogram, probes.delays)
    return summary


@click.command("up")
@click.option("--home", type=click.Path(path_type=Path), default=None,
              help="Run folder (default var/up/<timestamp>).")
@click.option("--limit", type=int, default=None, help="Use only the first N events of MovieLens-100k.")
@click.option("--rate", type=click.FloatRange(min=1.0), default=DEFAULT_RATE, show_default=True,
              help="Live phase pace, in raw events/s sent (steady; event time is compressed to fit).")
@online_store_option("auto", "redis", "sqlite", default="auto",
                     extra=" (auto: a private redis-server if one is on PATH, else SQLite)")
@redis_option("Use the Redis server at HOST:PORT as the online store instead of starting a private one "
              "(give it an empty Redis, or a database of its own: HOST:PORT,db=N).")
@click.option("--trigger-labels", type=int, default=LoopSettings.trigger_labels, show_default=True,
              help="The trainer fine-tunes after this many new labels.")
def up_command(home: Path | None, limit: int | None, rate: float, online_store: str, redis: str | None,
               trigger_labels: int) -> None:
    """Run the whole loop end to end on embedded defaults and print a report."""
    if redis and online_store == "sqlite":
        raise click.UsageError("--redis and --online-store sqlite contradict each other")
    home = home or Path("var/up") / time.strftime("%Y%m%d-%H%M%S")
    settings = LoopSettings(limit=limit, rate=rate, online_store=online_store, redis=redis,
                            trigger_labels=trigger_labels)
    summary = run_loop(home, settings)
    click.echo(json.dumps(summary, indent=2, default=str))
    click.echo(f"report: {home / 'report.md'}")
