"""How fresh must the model be? Conversion recall@100 versus the model refresh interval.

Replays the time-ordered MovieLens-100k label stream (``streams.replay.datasets.load_log`` +
``streams.label_join.joiner.compute_labels``: the streaming label rules run offline, ordered by
``label_ts``, the order the trainer consumes them in):

1. an initial model is trained (``training.trainer.step.train_full``, no holdout) on the first
   ``--initial-fraction`` of the labels;
2. the rest of the stream is walked in order. For every refresh interval N (``--intervals``,
   ``never`` = the initial model serves forever) a separate copy of the initial model is
   refreshed every N labels exactly as the trainer service does it
   (``training.trainer.step.finetune``: the labels since the last refresh plus the held-out slice
   carried from the previous step, a replay sample of older labels, the quality gate; a
   candidate that fails the gate is not published and the older model keeps serving);
3. every ``--eval-every`` labels the model each N is serving *at that moment* is evaluated on
   the NEXT ``--eval-window`` labels under the point-in-time protocol
   (``training.evaluation.heldout.heldout_evaluation``, as the trainer's gate and ``convcg up``
   grade): one query per conversion of the slice, as of its attributed click, with the user's
   engagements before it (the slice's own earlier ones included) as the sequence.

The model is the online trainer's (``training.learn.recipes.online_model_config``: the conversion
retriever over the 50 engagements the aggregates keep); the initial training and the
fine-tunes use the trainer's own defaults unless ``--epochs`` / ``--finetune-lr`` say otherwise.

Prints a table per N (mean recall@100 over the evaluation points, its paired difference to
``never``, fine-tune count, published count, compute seconds) and writes
``var/reports/refresh_interval.md``, ``var/reports/refresh_interval.png`` and the per-point
results ``var/reports/refresh_interval_points.csv``.

    python -m bench.experiments.refresh_interval                      # ~30 min on 2 cores
    python -m bench.experiments.refresh_interval --stream-limit 40000 --eval-every 2000 --intervals 1000,5000,20000,never
"""

from __future__ import annotations

import argparse
import copy
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.experiments.refresh_schedule import (AGE_BUCKETS, ArmSummary, Evaluation, gain_by_model_age, interval_name,
                                                parse_intervals, refresh_inputs, schedule, split_initial, summarize)

REPORT_DIR = Path("var/reports")
REPORT_NAME = "refresh_interval.md"
PLOT_NAME = "refresh_interval.png"
#: every evaluation point of every arm, to re-plot or re-analyse without re-running
POINTS_NAME = "refresh_interval_points.csv"
TASK = "conversion"
DEFAULT_INTERVALS = "1000,5000,20000,never"
#: points of the rolling mean in the recall-over-stream plot
PLOT_SMOOTHING = 5


# --- the experiment (I/O and training) ------------------------------------------------------------

@dataclass
class Arm:
    """One refresh interval: its serving model and its bookkeeping."""

    interval: int | None
    model: object
    last_refresh: int = 0
    carried: pd.DataFrame = field(default_factory=pd.DataFrame)
    finetunes: int = 0
    published: int = 0
    step_seconds: float = 0.0
    train_seconds: float = 0.0
    evals: list[Evaluation] = field(default_factory=list)

    @property
    def name(self) -> str:
        return interval_name(self.interval)


def refresh(arm: Arm, stream: pd.DataFrame, initial: pd.DataFrame, position: int, catalog, settings,
            publish_all: bool = False) -> None:
    """One trainer-service step at ``position``: fine-tune on (carried held-out + labels since
    the last refresh), replaying older labels; publish only through the gate unless
    ``publish_all``."""
    from training.trainer.step import finetune

    fresh, older = refresh_inputs(initial, stream, arm.carried, arm.last_refresh, position)
    started = time.perf_counter()
    result = finetune(arm.model, fresh, older, catalog, settings, show_progress=False)
    arm.step_seconds += time.perf_counter() - started
    arm.train_seconds += result.stats.seconds
    arm.finetunes += 1
    if result.passed or publish_all:
        arm.model = result.model
        arm.published += 1
    arm.carried = result.heldout
    arm.last_refresh = position


def evaluate_arms(arms: list[Arm], history: pd.DataFrame, heldout: pd.DataFrame, catalog, position: int,
                  k: int) -> None:
    """Every arm's serving model on the same point-in-time queries (built once)."""
    from training.evaluation.heldout import heldout_evaluation, model_metrics
    from training.evaluation.protocol import POINT_IN_TIME, metric_name

    evaluation = heldout_evaluation(history, heldout, catalog)
    n_pos = len(evaluation.queries[(TASK, POINT_IN_TIME)])
    for arm in arms:
        recall = model_metrics(arm.model, evaluation, catalog, (k,))[metric_name(TASK, k)] if n_pos else math.nan
        arm.evals.append(Evaluation(position, recall, n_pos))


def run(args) -> tuple[list[Arm], dict]:
    import torch
    from tqdm.auto import tqdm

    from bench.rigs.training import movielens_labels, sample_negatives
    from training.config import OptimConfig, TrainingSettings
    from training.learn.examples import full_catalog
    from training.learn.recipes import online_model_config
    from training.trainer.step import train_full

    torch.set_num_threads(args.threads)
    defaults = TrainingSettings()
    args.finetune_lr = args.finetune_lr or defaults.finetune_learning_rate  # shown in the report
    args.epochs = args.epochs or defaults.optim.epochs
    args.finetune_epochs = args.finetune_epochs or defaults.finetune_epochs
    labels, catalog, label_secs = movielens_labels()
    labels = sample_negatives(labels, args.negative_fraction, args.seed)
    catalog = full_catalog(catalog, labels)
    initial, stream = split_initial(labels, args.initial_fraction)
    if args.stream_limit:
        stream = stream.iloc[:args.stream_limit]
    config = online_model_config()
    started = time.perf_counter()
    base = train_full(initial, catalog, config, epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                      evaluate_holdout=False, show_progress=False, threads=args.threads)
    initial_seconds = time.perf_counter() - started
    settings = TrainingSettings(optim=OptimConfig(epochs=args.epochs, batch_size=args.batch_size, seed=args.seed,
                                                  threads=args.threads),
                                replay_ratio=args.replay_ratio, finetune_epochs=args.finetune_epochs,
                                finetune_learning_rate=args.finetune_lr)
    arms = [Arm(n, copy.deepcopy(base.model)) for n in parse_intervals(args.intervals)]
    by_interval = {arm.interval: arm for arm in arms}
    plan = schedule(len(stream), [a.interval for a in arms], args.eval_every, args.eval_window)
    for step in tqdm(plan, desc="stream", unit="step"):
        if step.is_refresh:
            refresh(by_interval[step.interval], stream, initial, step.position, catalog, settings,
                    publish_all=args.no_gate)
        else:
            history = pd.concat([initial, stream.iloc[:step.position]], ignore_index=True)
            evaluate_arms(arms, history, stream.iloc[step.position:step.end], catalog, step.position, args.k)
    info = dict(labels=len(labels), kinds=labels["kind"].value_counts().to_dict(), initial=len(initial),
                stream=len(stream), catalog=len(catalog), label_seconds=label_secs, initial_seconds=initial_seconds,
                initial_span_days=(initial["label_ts"].max() - initial["label_ts"].min()) / 86400,
                stream_span_days=(stream["label_ts"].max() - stream["label_ts"].min()) / 86400,
                stream_conversions=int(stream["kind"].isin(["conversion", "correction"]).sum()))
    return arms, info


# --- output ---------------------------------------------------------------------------------------

def output_name(name: str, suffix: str) -> str:
    """``refresh_interval.md`` + suffix ``_nogate`` -> ``refresh_interval_nogate.md``."""
    path = Path(name)
    return f"{path.stem}{suffix}{path.suffix}"


def fmt(v: float, digits: int = 4) -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def results_table(arms: list[Arm], summaries: list[ArmSummary], k: int) -> str:
    rows = [f"| refresh every N labels | mean conversion recall@{k} ± s.e. | pooled recall@{k} | "
            "difference vs never (paired ± s.e.) | fine-tunes | published | compute s (steps) | "
            "of which training s |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for arm, s in zip(arms, summaries):
        diff = "-" if math.isnan(s.diff_vs_never) else f"{s.diff_vs_never:+.4f} ± {fmt(s.diff_stderr)}"
        rows.append(f"| {arm.name} | {fmt(s.mean_recall)} ± {fmt(s.stderr)} | {fmt(s.pooled_recall)} | {diff} | "
                    f"{arm.finetunes} | {arm.published} | {arm.step_seconds:.1f} | {arm.train_seconds:.1f} |")
    return "\n".join(rows)


def age_table(arms: list[Arm], never: Arm | None) -> str:
    """Gain over never-refreshed by model age within each refresh cycle."""
    refreshed = [a for a in arms if a.interval is not None and len(a.evals)]
    if never is None or not refreshed:
        return ""
    rows = ["Recall gain over never-refreshed by model age (labels since the last refresh point; "
            f"{AGE_BUCKETS} buckets per interval; points after the first refresh; mean ± s.e. (points)):", "",
            "| refresh every N labels | " + " | ".join(f"age bucket {b + 1}" for b in range(AGE_BUCKETS)) + " |",
            "| --- |" + " ---: |" * AGE_BUCKETS]
    for arm in refreshed:
        cells = [f"{lo:,}-{hi:,}: {fmt(m)} ± {fmt(se)} ({n})"
                 for lo, hi, m, se, n in gain_by_model_age(arm.evals, never.evals, arm.interval)]
        rows.append(f"| {arm.name} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def plot(arms: list[Arm], summaries: list[ArmSummary], path: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    refreshed = [(a, s) for a, s in zip(arms, summaries) if a.interval is not None]
    never = [s for a, s in zip(arms, summaries) if a.interval is None]
    if refreshed:
        xs = [a.interval for a, _ in refreshed]
        paired = bool(never) and not any(math.isnan(s.diff_stderr) for _, s in refreshed)
        yerr = [s.diff_stderr if paired else s.stderr for _, s in refreshed]
        left.errorbar(xs, [s.mean_recall for _, s in refreshed], yerr=yerr, marker="o", capsize=4,
                      label="refreshed every N labels (bars: " + ("paired s.e. vs never)" if paired else "s.e.)"))
        left.set_xscale("log")
    if never:
        left.axhline(never[0].mean_recall, color="grey", linestyle="--", label="never refreshed")
    left.set_xlabel("refresh interval N (labels, log scale)")
    left.set_ylabel(f"mean conversion recall@{k}")
    left.set_title("Recall vs refresh interval")
    left.legend()
    for arm in arms:
        pos = np.array([e.position for e in arm.evals])
        rec = pd.Series([e.recall for e in arm.evals]).rolling(PLOT_SMOOTHING, min_periods=1).mean()
        right.plot(pos, rec, label=f"N={arm.name}")
    right.set_xlabel("stream position (labels after the initial training set)")
    right.set_ylabel(f"conversion recall@{k} (rolling mean of {PLOT_SMOOTHING} points)")
    right.set_title("Recall over the stream")
    right.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def report(arms: list[Arm], info: dict, args, total_seconds: float) -> str:
    never = next((a for a in arms if a.interval is None), None)
    summaries = [summarize(a.name, a.evals, None if never is None or a is never else never.evals) for a in arms]
    REPORT_DIR.mkdir(parents=True, exist_ok=True)
    points_csv = REPORT_DIR / output_name(POINTS_NAME, args.output_suffix)
    pd.DataFrame([dict(refresh_every=a.name, position=e.position, recall=e.recall, positives=e.positives)
                  for a in arms for e in a.evals]).to_csv(points_csv, index=False)
    plot_name = output_name(PLOT_NAME, args.output_suffix)
    plot(arms, summaries, REPORT_DIR / plot_name, args.k)
    points = len(arms[0].evals) if arms else 0
    gate = "off (every candidate published)" if args.no_gate else "on (as the trainer service)"
    lines = [
        "## How fresh must the model be? Conversion recall vs model refresh interval (MovieLens-100k)",
        "",
        f"Labels: {info['labels']} ({info['kinds']}; {args.negative_fraction:.0%} of negatives kept), ordered "
        f"by label time. Initial model: full training (the online trainer's model, {args.epochs} epoch(s), batch "
        f"{args.batch_size}) on the first {args.initial_fraction:.0%} = {info['initial']} labels "
        f"({info['initial_span_days']:.0f} days, {info['initial_seconds']:.1f} s). Stream: the next "
        f"{info['stream']} labels ({info['stream_span_days']:.0f} days, {info['stream_conversions']} conversions).",
        f"Refresh = `training.trainer.step.finetune` as the trainer service runs it: the labels since the last "
        f"refresh + the held-out slice carried over, replay ratio {args.replay_ratio}, {args.finetune_epochs} epoch(s), learning rate "
        f"{args.finetune_lr}, quality gate {gate}. Evaluation every {args.eval_every} labels on the next "
        f"{args.eval_window} labels ({points} points): point-in-time conversion recall@{args.k} (one query per conversion of the "
        f"slice as of its attributed click), with the model serving at that moment. Seed {args.seed}, {args.threads} torch thread(s).",
        "",
        results_table(arms, summaries, args.k),
        "",
        age_table(arms, never),
        "",
        "Compute s = wall seconds of all fine-tune steps (example encoding, training, gate evaluation "
        "of candidate and serving model); the initial training is common to all and not counted. "
        f"Difference vs never: mean over the same {points} evaluation points of (recall of N - recall of "
        "never), with its standard error.",
        "",
        f"![recall vs refresh interval]({plot_name})",
        "",
        f"Every evaluation point: `{points_csv.name}`. Total run time {total_seconds:.0f} s (labelling "
        f"{info['label_seconds']:.0f} s).",
    ]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--intervals", default=DEFAULT_INTERVALS, help="refresh every N labels; 'never' = no refresh")
    ap.add_argument("--initial-fraction", type=float, default=0.5, help="labels (by time) for the initial model")
    ap.add_argument("--eval-every", type=int, default=1000, help="labels between evaluation points")
    ap.add_argument("--eval-window", type=int, default=1000, help="labels in the next slice evaluated on")
    ap.add_argument("--stream-limit", type=int, default=0, help="walk only this many stream labels (0 = all)")
    ap.add_argument("--negative-fraction", type=float, default=0.5, help="share of negative labels kept")
    ap.add_argument("--replay-ratio", type=float, default=1.0, help="older labels replayed per new label")
    ap.add_argument("--finetune-lr", type=float, default=0.0, help="fine-tune learning rate (0 = trainer default)")
    ap.add_argument("--no-gate", action="store_true", help="publish every fine-tuned candidate")
    ap.add_argument("--epochs", type=int, default=0, help="initial training epochs (0 = trainer default)")
    ap.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune epochs (0 = trainer default)")
    ap.add_argument("--batch-size", type=int, default=512)
    ap.add_argument("--k", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is faster on this busy 2-core box)")
    ap.add_argument("--output-suffix", default="", help="appended to the report and plot names (keeps other runs)")
    args = ap.parse_args()
    parse_intervals(args.intervals)  # fail fast on a bad list
    started = time.perf_counter()
    arms, info = run(args)
    text = report(arms, info, args, time.perf_counter() - started)
    print(text)
    report_path = REPORT_DIR / output_name(REPORT_NAME, args.output_suffix)
    report_path.write_text(text + "\n")
    print(f"\nwrote {report_path} and {REPORT_DIR / output_name(PLOT_NAME, args.output_suffix)}")


if __name__ == "__main__":
    main()
