"""``orchestrator``: the command line. Parses, loads config, calls the core.

Exit codes: 0 ok, 2 bad config or arguments, 1 anything else.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, replace
from typing import Any, TypeVar

import click
import redis

from orchestrator import codec, control, deadletters, plugins, status
from orchestrator.config import (
    EMBEDDED,
    SEARCH_PATH,
    Backend,
    Config,
    ConfigError,
    QueueConfig,
    describe,
    load_config,
)
from orchestrator.connections import REDIS_ERRORS, connect, redact_url
from orchestrator.logs import Events, setup_logging

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])


class Failure(click.ClickException):
    """An error that is not the user's input: exit 1."""

    exit_code = EXIT_FAILURE


def config_option(func: F) -> F:
    return click.option(
        "-c",
        "--config",
        "config_path",
        default=None,
        type=click.Path(dir_okay=False),
        help="The config file. Default: $ORCH_CONFIG, else the first of "
        + ", ".join(map(str, SEARCH_PATH))
        + " that exists.",
    )(func)


def load(config_path: str | None) -> Config:
    try:
        return load_config(config_path)
    except ConfigError as exc:
        for line in exc.problems:
            click.echo(line, err=True)
        sys.exit(EXIT_USAGE)


def client_for(config: Config) -> redis.Redis:
    if config.redis_url == EMBEDDED:
        raise Failure("redis.url is 'embedded': only 'run' and 'demo' start a private Redis")
    return connect(config.redis_url, name="orch-cli")


@contextmanager
def redis_errors() -> Iterator[None]:
    try:
        yield
    except REDIS_ERRORS as exc:
        raise Failure(f"Redis unavailable: {exc}") from exc


@contextmanager
def unknown_ids() -> Iterator[None]:
    try:
        yield
    except deadletters.UnknownDeadLetters as exc:
        raise Failure(str(exc)) from None


def queue_of(config: Config, name: str) -> QueueConfig:
    try:
        return config.queue(name)
    except KeyError as exc:
        raise click.BadParameter(str(exc.args[0]), param_hint="QUEUE") from None


class CommandLine(click.Group):
    """The core's commands, joined by the apps' (``orchestrator.plugins``)
    the first time a command is looked up."""

    apps_added = False

    def _add_apps(self) -> None:
        if not self.apps_added:
            self.apps_added = True
            for app in plugins.apps():
                for command in app.commands():
                    self.add_command(needing_extra(app, command))

    def list_commands(self, ctx: click.Context) -> list[str]:
        self._add_apps()
        return super().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        self._add_apps()
        return super().get_command(ctx, cmd_name)


def needing_extra(app: plugins.App, command: click.Command) -> click.Command:
    """``command`` as is, or, when its app's extra is not installed, one
    that says which to install (its options and help stay)."""
    absent = plugins.missing(app)
    if absent and app.extra is not None:
        why = (
            f"orchestrator {command.name} needs the [{app.extra}] extra "
            f"({', '.join(absent)} not installed): {plugins.install_hint(app.extra)}"
        )

        def refuse(*_args: Any, **_kwargs: Any) -> None:
            raise Failure(why)

        command.callback = refuse
    return command


@click.group(cls=CommandLine, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name=plugins.DISTRIBUTION, prog_name="orchestrator")
def cli() -> None:
    """Redis-driven process orchestrator: queue-depth scaling of short-lived workers."""


@cli.command()
@config_option
def run(config_path: str | None) -> None:
    """Run the spawner and reaper in the foreground until SIGTERM/SIGINT."""
    from orchestrator.embedded import EmbeddedRedis

    config = load(config_path)
    setup_logging(config.log)
    if config.redis_url != EMBEDDED:
        sys.exit(run_spawner(config))
    with EmbeddedRedis() as server:
        sys.exit(run_spawner(replace(config, redis_url=server.url)))


def run_spawner(config: Config) -> int:
    """A spawner in the foreground until stopped; its exit code."""
    from orchestrator import procs
    from orchestrator.spawner import WorkerSpawner

    procs.set_title(f"orch-spawner {config.spawner.host}")
    spawner = WorkerSpawner(config, events=Events(config.log.emoji), subreaper=True)
    try:
        return spawner.run()
    except KeyboardInterrupt:  # pragma: no cover - signals are handled in run()
        return 0
    finally:
        sys.stdout.flush()


@cli.command()
@config_option
def check(config_path: str | None) -> None:
    """Validate the config and print it resolved with its defaults."""
    import yaml

    config = load(config_path)
    plain = json.loads(json.dumps(describe(config), default=str))
    click.echo(f"{config.path}: valid; relative paths are from {config.root}", err=True)
    click.echo(yaml.safe_dump(plain, sort_keys=False, allow_unicode=True), nl=False)


@cli.command(name="status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def status_command(config_path: str | None, as_json: bool) -> None:
    """Per queue: workers, backlog, pending, oldest entry, dead letters."""
    config = load(config_path)
    client = client_for(config)
    with redis_errors():
        hosts = status.read_status(client)
        figures = {f.key: (f, f.read(client)) for f in plugins.status_figures()}
    if as_json:
        out = {"alive": bool(hosts), "hosts": [asdict(h) for h in hosts]}
        out.update({key: rows for key, (_, rows) in figures.items()})
        click.echo(json.dumps(out, indent=2))
    elif hosts:
        click.echo(status.format_table(hosts, time.time()))
        for shown, rows in figures.values():
            for row in rows:
                click.echo(f"  {shown.line(row)}")
    if not hosts:
        click.echo(
            f"No spawner is alive on {where(config)}: no host heartbeat in Redis (orch:hosts).",
            err=True,
        )
        sys.exit(EXIT_FAILURE)


@cli.command()
@config_option
@click.argument("queue")
@click.argument("job", required=False, default="-")
def enqueue(config_path: str | None, queue: str, job: str) -> None:
    """Add jobs: one JSON object, or JSON lines from stdin ('-')."""
    from orchestrator.producer import Producer, ReplicationTimeout

    config = load(config_path)
    q = queue_of(config, queue)
    if q.backend is not Backend.STREAM:
        raise click.BadParameter(f"{queue} is an RQ queue: enqueue with RQ", param_hint="QUEUE")
    lines = sys.stdin.read().splitlines() if job == "-" else [job]
    jobs = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except ValueError as exc:
            raise click.BadParameter(f"line {number}: not JSON: {exc}", param_hint="JOB") from None
        if not isinstance(value, dict):
            raise click.BadParameter(f"line {number}: must be a JSON object", param_hint="JOB")
        jobs.append(value)
    with redis_errors():
        try:
            ids = Producer(config, client_for(config)).enqueue_many(q.name, jobs)
        except ReplicationTimeout as exc:
            raise Failure(str(exc)) from None
    click.echo(
        f"enqueued {len(ids)} job(s) on {q.stream} of {where(config)}"
        + (f": {ids[0]}" if len(ids) == 1 else "")
    )


@cli.command()
@config_option
def streams(config_path: str | None) -> None:
    """Consumer-group health: pending per consumer, idle, lag, dead consumers."""
    from orchestrator.streamhealth import inspect_all

    config = load(config_path)
    with redis_errors():
        report = inspect_all(client_for(config), config)
    click.echo(f"Redis {where(config)}")
    click.echo(report.render())


@cli.command()
@config_option
@click.option("--dry-run", is_flag=True, help="Report what would be recovered; change nothing.")
def reap(config_path: str | None, dry_run: bool) -> None:
    """Recover entries held by dead consumers, then remove those consumers."""
    from orchestrator.streamhealth import reap_once

    config = load(config_path)
    with redis_errors():
        results = reap_once(client_for(config), config, dry_run=dry_run)
    verb = "would recover" if dry_run else "recovered"
    for r in results:
        click.echo(
            f"{r.queue}: consumer {r.consumer}: {verb} {r.parked} entr"
            f"{'y' if r.parked == 1 else 'ies'}; {r.dead_lettered} over max_attempts "
            "to dead letters"
        )
    if not results:
        click.echo(f"no dead consumers on {where(config)}")


@cli.command()
@config_option
@click.argument("queue")
def pause(config_path: str | None, queue: str) -> None:
    """No new workers for QUEUE on any host; live ones finish their job. Entries stay."""
    config, q = _queue_control(config_path, queue)
    with redis_errors():
        control.pause(client_for(config), q.name)
    click.echo(f"{q.name} paused on every host of {where(config)} within a tick")


@cli.command()
@config_option
@click.argument("queue")
def resume(config_path: str | None, queue: str) -> None:
    """Undo pause or drain: QUEUE's workers start again."""
    config, q = _queue_control(config_path, queue)
    with redis_errors():
        control.resume(client_for(config), q.name)
    click.echo(f"{q.name} resumed on every host of {where(config)}")


@cli.command()
@config_option
@click.argument("queue")
@click.option("--wait/--no-wait", default=True, show_default=True, help="Report when drained.")
@click.option("--timeout", default=300.0, show_default=True, type=click.FloatRange(min=0))
def drain(config_path: str | None, queue: str, wait: bool, timeout: float) -> None:
    """Finish what QUEUE's workers hold, start nothing new, report when empty.

    Exit 1 if it is not drained within --timeout (it goes on draining).
    """
    config, q = _queue_control(config_path, queue)
    client = client_for(config)
    with redis_errors():
        control.drain(client, q.name)
        click.echo(f"{q.name} draining on every host of {where(config)}")
        if not wait:
            return
        rows = status.wait_drained(client, q.name, timeout)
    if rows is None:
        click.echo(f"{q.name} not drained after {timeout:g}s (still draining)", err=True)
        sys.exit(EXIT_FAILURE)
    click.echo(
        f"{q.name} drained: nothing held; {rows} entries wait undelivered (resume starts them)"
    )


@cli.command()
@config_option
@click.argument("queue")
@click.argument("workers", required=False, type=click.IntRange(min=0))
@click.option("--reset", is_flag=True, help="Back to the config's max_concurrent.")
def scale(config_path: str | None, queue: str, workers: int | None, reset: bool) -> None:
    """Override QUEUE's max_concurrent on every host (WORKERS), or --reset it."""
    if (workers is None) == (not reset):
        raise click.UsageError("give WORKERS or --reset (not both)")
    config, q = _queue_control(config_path, queue)
    with redis_errors():
        control.scale(client_for(config), q.name, None if reset else workers)
    shown = "the config's max_concurrent" if reset else f"{workers} worker(s) per host"
    click.echo(f"{q.name} scaled to {shown} on every host of {where(config)}")


def _queue_control(config_path: str | None, queue: str) -> tuple[Config, QueueConfig]:
    config = load(config_path)
    return config, queue_of(config, queue)


def where(config: Config) -> str:
    """The Redis a command talks to, password redacted, and the host it is for."""
    return f"{redact_url(config.redis_url)} (host {config.spawner.host})"


@cli.group()
def dlq() -> None:
    """Dead letters: list, retry, purge."""


@dlq.command(name="list")
@config_option
@click.argument("queue")
@click.option("--limit", default=100, show_default=True, type=click.IntRange(min=1))
def dlq_list(config_path: str | None, queue: str, limit: int) -> None:
    """Show a queue's dead letters with their errors."""
    config = load(config_path)
    q = queue_of(config, queue)
    with redis_errors():
        client = client_for(config)
        letters = deadletters.list_dead(client, q, limit)
        total = deadletters.count_dead(client, q)
    for d in letters:
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.failed_at))
        click.echo(
            f"{d.id}  attempts={d.attempts}  failed_at={when}  error={codec.printable(d.error)}"
        )
        for key, value in d.original_fields.items():
            click.echo(f"    {codec.printable(key)}: {codec.printable(value)}")
    click.echo(f"{total} dead letter(s) in {deadletters.where(q)} on {where(config)}")


@dlq.command(name="retry")
@config_option
@click.argument("queue")
@click.argument("ids", nargs=-1)
def dlq_retry(config_path: str | None, queue: str, ids: tuple[str, ...]) -> None:
    """Put dead letters (all, or the IDS given) back on the queue."""
    config = load(config_path)
    q = queue_of(config, queue)
    with redis_errors(), unknown_ids():
        new_ids = deadletters.retry_dead(client_for(config), q, list(ids) or None)
    click.echo(f"re-queued {len(new_ids)} job(s) on {q.stream} of {where(config)}")


@dlq.command(name="purge")
@config_option
@click.argument("queue")
@click.argument("ids", nargs=-1)
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
def dlq_purge(config_path: str | None, queue: str, ids: tuple[str, ...], yes: bool) -> None:
    """Delete dead letters (all, or the IDS given)."""
    config = load(config_path)
    q = queue_of(config, queue)
    what = f"{len(ids)} dead letter(s)" if ids else f"all dead letters of {deadletters.where(q)}"
    if not yes and not click.confirm(f"Delete {what} on {where(config)}?"):
        sys.exit(EXIT_FAILURE)
    with redis_errors(), unknown_ids():
        n = deadletters.purge_dead(client_for(config), q, list(ids) or None)
    click.echo(f"deleted {n} dead letter(s) of {deadletters.where(q)} on {where(config)}")


@cli.command()
@config_option
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on.")
@click.option("--port", default=8765, show_default=True, type=click.IntRange(1, 65535))
@click.option(
    "--allow-actions",
    is_flag=True,
    help="Allow retrying and purging dead letters from the page, with the token "
    "(ORCH_DASHBOARD_TOKEN, else one is made and printed).",
)
def dashboard(config_path: str | None, host: str, port: int, allow_actions: bool) -> None:
    """Serve the live page of every host on the Redis (read-only by default)."""
    import os
    import secrets

    try:
        from orchestrator.dashboard.server import serve
    except ImportError as exc:
        raise Failure(
            f"the dashboard needs the [dashboard] extra ({exc.name} is missing): "
            + plugins.install_hint("dashboard")
        ) from None
    from orchestrator.dashboard.board import Board

    config = load(config_path)
    setup_logging(config.log)
    client_for(config)  # refuses 'embedded'
    token = None
    if allow_actions:
        token = os.environ.get("ORCH_DASHBOARD_TOKEN") or secrets.token_urlsafe(24)
        if not os.environ.get("ORCH_DASHBOARD_TOKEN"):
            click.echo(f"actions token (X-Orch-Token): {token}", err=True)
    board = Board(config, actions=allow_actions)
    mode = "actions allowed with the token" if allow_actions else "read-only"
    shown = f"[{host}]" if ":" in host else host
    say = f"Dashboard on http://{shown}:{port}/ ({mode}), Redis {board.url}"
    serve(board, host, port, token, ready=lambda: click.echo(say, err=True))


def main() -> None:
    try:
        cli(standalone_mode=True)
    except KeyboardInterrupt:
        sys.exit(EXIT_FAILURE)
