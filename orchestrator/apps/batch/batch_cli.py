"""The batch engine's commands: ``orchestrator batch submit|status``."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from typing import Any

import click

from orchestrator.cli import (
    EXIT_FAILURE,
    EXIT_OK,
    client_for,
    config_option,
    load,
    queue_of,
    redis_errors,
    where,
)


@click.group()
def batch() -> None:
    """Batch scans: submit one, follow its progress (README: Batch engine)."""


@batch.command(name="submit")
@config_option
@click.option("--symbols", multiple=True, help="Symbols, comma-separated; may repeat.")
@click.option(
    "--universe",
    type=click.Path(exists=True, dir_okay=False),
    help="A file of symbols (spaces, commas or lines; '#' comments).",
)
@click.option("--timeframe", required=True, help="e.g. 1d, 1h, 5m: a folder of the data root.")
@click.option("--from", "start", metavar="YYYY-MM-DD", help="First day matches count.")
@click.option("--to", "end", metavar="YYYY-MM-DD", help="Last day (indicators use all before).")
@click.option("--formula", required=True, help="e.g. 'rsi(14) < limit and close > sma(200)'.")
@click.option("--param", "params", multiple=True, metavar="NAME=NUMBER", help="May repeat.")
@click.option("--timeout", type=click.FloatRange(min=0.01), help="Seconds per symbol.")
@click.option("--memory-mb", type=click.FloatRange(min=16), help="RSS cap per symbol.")
@click.option("--last-bar-only", is_flag=True, help="Report a match on the last bar only.")
@click.option(
    "--shard-size",
    type=click.IntRange(min=0),
    help="Symbols per shard, shared out to batch workers (default batch.shard_size; 0: one).",
)
@click.option("--id", "batch_id", help="The batch id (default: generated).")
@click.option("--queue", default="batch_jobs", show_default=True)
def batch_submit(
    config_path: str | None,
    shard_size: int | None,
    batch_id: str | None,
    queue: str,
    **options: Any,
) -> None:
    """Queue a batch scan; prints its id (details on stderr)."""
    from pathlib import Path

    from orchestrator.apps.batch.request import BatchRejected, new_batch_id
    from orchestrator.apps.batch.submit import BatchExists, build_payload, prepare, submit

    config = load(config_path)
    q = queue_of(config, queue)
    settings = config.sections["batch"].resolve(config.root)
    try:
        payload = build_payload(options)
        request = prepare(payload, settings, Path.cwd(), batch_id or new_batch_id())
        size = settings.shard_size if shard_size is None else shard_size
        with redis_errors():
            done = submit(client_for(config), q, request, size, settings.keep_s)
    except (BatchRejected, BatchExists) as exc:
        raise click.UsageError(str(exc)) from None
    click.echo(done.batch_id)
    click.echo(
        f"queued {done.symbols} symbol(s) in {done.shards} shard(s) on {done.stream}; "
        f"follow it: orchestrator batch status {done.batch_id}",
        err=True,
    )


def _watch(readings: Iterator[Any], live: bool, once: bool, quiet: bool) -> Any:
    """Print readings as they change (one line rewritten in a terminal) until
    the batch ends; the last reading (None: unknown). ``quiet``: read one."""
    from orchestrator.apps.batch.batch_status import format_line

    last, shown = None, ""
    for reading in readings:
        last = reading
        if reading is None or quiet:
            break
        line = format_line(reading, time.time())
        if live:
            click.echo(f"\r{line}\x1b[K", nl=False)
        elif line != shown:
            click.echo(line)
        shown = line
        if once:
            break
    return last


@batch.command(name="status")
@config_option
@click.argument("batch_id")
@click.option("--once", is_flag=True, help="Print one reading and exit.")
@click.option("--json", "as_json", is_flag=True, help="Print one reading as JSON and exit.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=0.5, show_default=True)
def batch_status(
    config_path: str | None, batch_id: str, once: bool, as_json: bool, interval: float
) -> None:
    """A live progress bar (rate, ETA) until the batch ends; Ctrl-C stops watching.

    Exit 1 when the batch is unknown, failed, or stalled (a shard in the dead letters).
    """
    from orchestrator.apps.batch.batch_record import batch_key
    from orchestrator.apps.batch.batch_status import follow, format_details

    config = load(config_path)
    client = client_for(config)
    live = sys.stdout.isatty() and not (once or as_json)
    last = None
    try:
        with redis_errors():
            readings = follow(client, batch_id, 0 if once or as_json else interval)
            last = _watch(readings, live, once, as_json)
    except KeyboardInterrupt:
        click.echo("" if live else "stopped watching")
        sys.exit(EXIT_OK)
    if live:
        click.echo()
    if last is None:
        click.echo(
            f"unknown batch id {batch_id!r}: no {batch_key(batch_id)} in Redis {where(config)} "
            "(never submitted, or expired after batch.keep)",
            err=True,
        )
        sys.exit(EXIT_FAILURE)
    if as_json:
        click.echo(json.dumps(last.to_json(time.time()), indent=2))
    else:
        for detail in format_details(last):
            click.echo(detail)
    sys.exit(EXIT_FAILURE if last.state == "failed" or last.stalled else EXIT_OK)
