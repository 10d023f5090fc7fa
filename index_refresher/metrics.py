"""Prometheus metrics of the refresher (one registry per process; ``metrics_port`` serves it)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class RefresherMetrics:
    def __init__(self, registry: CollectorRegistry | None = None):
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.items_pending = Gauge("convcg_refresher_new_items_pending",
                                   "New items waiting to be sent to the retrieval service", registry=r)
        self.items_sent = Counter("convcg_refresher_new_items_sent",
                                  "New items the retrieval service took", registry=r)
        self.items_dropped = Counter("convcg_refresher_new_items_dropped",
                                     "New items dropped from a full pending buffer (oldest first; sent "
                                     "again when they are seen again)", registry=r)
        self.items_refused = Counter("convcg_refresher_new_items_refused",
                                     "New items in batches the retrieval service refused for good (4xx), "
                                     "dead-lettered", ["status"], registry=r)
        self.flush_failures = Counter("convcg_refresher_new_item_flush_failures",
                                      "Batches that failed transiently (service down, no index yet) and "
                                      "are retried with backoff", registry=r)
        self.watcher_restarts = Counter("convcg_refresher_watcher_restarts",
                                        "Times the new-item watcher thread failed and was restarted", registry=r)
        self.artifacts_rebuilt = Counter("convcg_refresher_artifacts_rebuilt",
                                         "Index artifacts the retrieval service refused, rebuilt", registry=r)
