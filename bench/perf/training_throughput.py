"""Training throughput (examples/s) on this CPU (1 torch thread by default; 1 vs 2 printed).

Measures one epoch of the default model (64-d, default hash buckets) and of the tiny test
model over seeded synthetic labels, at two batch sizes. Baseline in the same run: the same
default model trained with plain dense Adam on every parameter (what a naive loop does); our
trainer uses SparseAdam for the id tables, so a step only touches the batch's rows.

    python -m bench.perf.training_throughput [--labels 30000]
"""

from __future__ import annotations

import argparse
import time

import torch

from bench.rigs.training import THREADS
from model.config import ModelConfig
from model.towers import TwoTowerModel
from tests.support.tiny_models import tiny_config
from training.config import OptimConfig
from training.learn.fit import fit
from training.learn.losses import multitask_loss
from training.learn.rows import training_set
from training.synthetic import synthetic_catalog, synthetic_labels


def dense_adam_epoch(config: ModelConfig, examples, batch_size: int) -> float:
    """Baseline: dense embedding gradients, one Adam over everything, in-batch loss
    (``examples``: a ``TrainingSet`` of a config with in-batch negatives). Returns examples/s."""
    torch.manual_seed(0)
    model = TwoTowerModel(config)
    for module in model.modules():
        if isinstance(module, torch.nn.Embedding):
            module.sparse = False
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(0))
    seen, start = 0, time.perf_counter()
    for s in range(0, len(examples), batch_size):
        b = examples.rows.examples.select(order[s:s + batch_size])
        loss = multitask_loss(model.embed(b.queries, b.items), b.role, b.weight, b.items.item,
                              b.items.advertiser, b.logq, model.served_bias, config.loss).total
        opt.zero_grad()
        loss.backward()
        opt.step()
        seen += len(b)
    return seen / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--labels", type=int, default=30_000)
    args = ap.parse_args()
    torch.set_num_threads(THREADS)
    torch.set_flush_denormal(True)
    catalog = synthetic_catalog(5_000, n_advertisers=300, n_categories=40)
    labels = synthetic_labels(catalog, n_users=3_000, n_labels=args.labels, seed=0)
    print(f"{len(labels)} label rows ({labels['kind'].value_counts().to_dict()}), {THREADS} threads")
    results = {}
    for name, config in (("default", ModelConfig()), ("tiny", tiny_config())):
        start = time.perf_counter()
        examples = training_set(labels, labels, catalog, config, "impression")
        if name == "default":
            examples_default = examples
        encode_s = time.perf_counter() - start
        print(f"{name}: encoded {len(examples)} examples in {encode_s:.2f}s "
              f"({len(examples) / encode_s:,.0f} examples/s)")
        for batch in (512, 1024):
            fit(TwoTowerModel(config), examples.select(torch.arange(min(2048, len(examples)))),
                OptimConfig(epochs=1, batch_size=batch), show_progress=False)  # warm-up
            torch.manual_seed(0)
            stats = fit(TwoTowerModel(config), examples, OptimConfig(epochs=1, batch_size=batch),
                        show_progress=False)
            results[(name, batch)] = stats.examples_per_second
            print(f"  {name} batch {batch}: {stats.examples_per_second:,.0f} examples/s "
                  f"({stats.seconds:.1f}s per epoch)")
    for threads in (1, 2):  # the brief's 2 threads vs our default of 1
        torch.manual_seed(0)
        stats = fit(TwoTowerModel(ModelConfig()), examples_default, OptimConfig(epochs=1, batch_size=1024,
                                                                                threads=threads),
                    show_progress=False)
        print(f"default batch 1024 with {threads} torch thread(s): {stats.examples_per_second:,.0f} examples/s")
        results[("threads", threads)] = stats.examples_per_second
    print(f"ratio 2 threads / 1 thread: {results[('threads', 2)] / results[('threads', 1)]:.2f}x")
    torch.set_num_threads(THREADS)
    for batch in (512, 1024):
        base = dense_adam_epoch(ModelConfig(), examples_default, batch)
        ours = results[("default", batch)]
        print(f"baseline dense Adam, default model, batch {batch}: {base:,.0f} examples/s; "
              f"sparse/dense ratio {ours / base:.2f}x")


if __name__ == "__main__":
    main()
