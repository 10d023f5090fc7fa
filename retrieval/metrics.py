"""Prometheus metrics of the retrieval service (one registry per service instance)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from convcg.contract import MetricNames

LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0)
SWAP_BUCKETS = (0.001, 0.01, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 120)


class RetrievalMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        self._serving: tuple[str, str] | None = None
        r = self.registry
        self.query_latency = Histogram("convcg_retrieval_query_seconds",
                                       "Time to answer one retrieval query (embed + search)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.queries = Counter("convcg_retrieval_queries", "Retrieval queries by outcome",
                               ["outcome"], registry=r)
        self.served = Counter("convcg_retrieval_served", "Queries answered, by the (model, index) "
                              "version pair that answered them", ["model_version", "index_version"],
                              registry=r)
        self.swaps = Counter(MetricNames.INDEX_SWAPS, "Serving pair swaps by kind (load, rollback)",
                             ["kind"], registry=r)
        self.swap_duration = Histogram("convcg_retrieval_swap_seconds",
                                       "Time to load and verify a new serving pair, until swapped in",
                                       buckets=SWAP_BUCKETS, registry=r)
        self.index_size = Gauge("convcg_retrieval_index_items", "Items in the serving index "
                                "(including incrementally added ones)", registry=r)
        self.served_version = Gauge("convcg_retrieval_serving_version",
                                    "1 for the (model, index) version pair now serving, 0 for pairs served earlier",
                                    ["model_version", "index_version"], registry=r)
        self.refused_artifacts = Counter("convcg_retrieval_refused_artifacts",
                                         "Index artifacts / model versions refused at load, by reason",
                                         ["reason"], registry=r)
        self.items_added = Counter("convcg_retrieval_items_added",
                                   "Items added incrementally to the serving index", registry=r)
        self.released_pairs = Counter("convcg_retrieval_released_pairs",
                                      "Old serving pairs released after a swap", registry=r)
        self.feature_lookup_failures = Counter(MetricNames.USER_FEATURE_READ_FAILURES,
                                               "Online user feature lookups that failed (query served "
                                               "without features)", registry=r)
        self.feature_lookup_latency = Histogram(MetricNames.USER_FEATURE_READS,
                                                "Time a query spent reading the user's online features "
                                                "(part of convcg_retrieval_query_seconds)",
                                                buckets=LATENCY_BUCKETS, registry=r)

    def forget(self, model_version: str, index_version: str) -> None:
        """Remove the series of a (model, index) pair no longer served nor kept to roll back to,
        so the label sets do not grow with every version ever served."""
        for metric in (self.served, self.served_version):
            try:
                metric.remove(model_version, index_version)
            except KeyError:
                pass

    def set_serving(self, model_version: str, index_version: str, size: int) -> None:
        """1 for the pair now serving, 0 for pairs served before (kept: they were served)."""
        if self._serving is not None and self._serving != (model_version, index_version):
            self.served_version.labels(*self._serving).set(0)
        self._serving = (model_version, index_version)
        self.served_version.labels(model_version, index_version).set(1)
        self.index_size.set(size)
