"""``convcg deadletters``: what was rejected, grouped by component and reason."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

import click

from convcg.cli_options import bootstrap_option, kafka_settings_for, topic_prefix_option
from convcg.contract import DeadLetter


@dataclass(frozen=True)
class ReasonGroup:
    component: str
    reason: str
    count: int
    example: str  # the detail of the newest dead letter of the group
    topics: tuple[str, ...]


def group_dead_letters(letters: list[DeadLetter]) -> list[ReasonGroup]:
    """Groups by (component, reason), largest first; each with its newest detail as an example."""
    counts = Counter((d.component, d.reason) for d in letters)
    newest: dict[tuple[str, str], DeadLetter] = {}
    topics: dict[tuple[str, str], set[str]] = {}
    for d in letters:
        key = (d.component, d.reason)
        if key not in newest or d.rejected_at >= newest[key].rejected_at:
            newest[key] = d
        topics.setdefault(key, set()).add(d.topic)
    return [ReasonGroup(c, r, n, newest[(c, r)].detail, tuple(sorted(topics[(c, r)])))
            for (c, r), n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))]


@click.command("deadletters")
@bootstrap_option()
@topic_prefix_option()
@click.option("--timeout", type=float, default=10.0, show_default=True,
              help="Stop reading after this many seconds without records.")
def deadletters(bootstrap: str | None, topic_prefix: str | None, timeout: float) -> None:
    """Print the dead-letter topic grouped by component and reason, with an example each."""
    from convcg.kafka.io import read_topic
    from convcg.validation import decode_dead_letter

    kafka = kafka_settings_for(bootstrap, topic_prefix)
    raw = read_topic(kafka.bootstrap, kafka.topics.dead_letters, timeout=timeout, decode=False)
    letters, unreadable = [], 0
    for record in raw:
        try:
            letters.append(decode_dead_letter(record.value))
        except (ValueError, TypeError, KeyError):
            unreadable += 1
    click.echo(f"{len(letters)} dead letters" + (f" ({unreadable} not in the dead-letter shape)" if unreadable else ""))
    for g in group_dead_letters(letters):
        click.echo(f"  {g.count:>7}  {g.component:<15} {g.reason:<26} {', '.join(g.topics)}")
        click.echo(f"           e.g. {g.example[:160]}")
