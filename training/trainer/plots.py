"""Plot of loss and recall over registry versions (matplotlib, Agg backend)."""

from __future__ import annotations

import math
from pathlib import Path

from training.evaluation.protocol import HEADLINE, HEADLINE_K, metric_name

PLOT_NAME = "metrics_over_versions.png"
RECALL_METRICS = (HEADLINE, metric_name("conversion", 1000), metric_name("engagement", HEADLINE_K))


def plot_versions(registry, path: Path | None = None) -> Path | None:
    """Draw final loss and recall of every version; saved by default into the current
    version's folder, next to its metrics.json. Returns the file written (None if empty)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    versions = registry.versions()
    if not versions:
        return None
    metrics = [registry.metrics(v) for v in versions]
    if path is None:
        path = registry.versions_dir / (registry.current_version() or versions[-1]) / PLOT_NAME
    fig, (ax_loss, ax_recall) = plt.subplots(1, 2, figsize=(11, 4))
    x = list(range(len(versions)))
    ax_loss.plot(x, [m.get("final_loss", math.nan) for m in metrics], marker="o")
    ax_loss.set_title("final training loss")
    names = sorted({k for m in metrics for k, v in m.items() if "_recall@" in k and isinstance(v, (int, float))},
                   key=lambda k: (k not in RECALL_METRICS, k))
    for name in names:
        ax_recall.plot(x, [m.get(name, math.nan) for m in metrics], marker="o", label=name)
    ax_recall.set_title("recall on the held-out slice at publish time")
    ax_recall.legend(fontsize=8)
    for ax in (ax_loss, ax_recall):
        ax.set_xticks(x, versions, rotation=45, fontsize=7)
        ax.set_xlabel("version")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path
