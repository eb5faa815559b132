"""Shared pieces of the command line: the root group, option sets, error handling, output."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import signal
import sys
import traceback
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn, TypeVar

import click
import msgspec
from rich.console import Console

from aether.connect import ENV_URL, ConnectOptions
from aether.errors import AetherError, InvalidInputError, NatsConnectionError

__all__ = [
    "DEFAULT_STREAM",
    "AetherGroup",
    "CommandFailed",
    "connection_options",
    "emit_json",
    "fail",
    "forget_stop_signals",
    "on_stop_signals",
    "out_console",
    "run",
    "store_options",
]

DEFAULT_STREAM = "events"
"""The stream base name the command line, the demo and the examples use by default."""

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])

_DEBUG_ENV = "AETHER_DEBUG"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


class AetherGroup(click.Group):
    """A click group whose failures print ONE line on stderr and exit non-zero (never a traceback).

    Exit codes: 0 success, 1 an operation failed, 2 bad usage or input, 130 interrupted.
    Set ``AETHER_DEBUG=1`` to get the traceback of an unexpected error.
    """

    def main(self, args: Any = None, prog_name: str | None = None, complete_var: str | None = None,
             standalone_mode: bool = True, **extra: Any) -> Any:
        code = self._main(args, prog_name or "aether", complete_var, **extra)
        if standalone_mode:
            sys.exit(code)
        return code

    def _main(self, args: Any, prog_name: str, complete_var: str | None, **extra: Any) -> int:
        try:
            rv = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.exceptions.NoArgsIsHelpError as exc:
            click.echo(exc.ctx.get_help() if exc.ctx else "")
            return 0
        except click.UsageError as exc:
            where = exc.ctx.command_path if exc.ctx is not None else prog_name
            hint = f" (see '{where} --help')" if exc.ctx is not None else ""
            click.echo(f"{where}: error: {_one_line(exc.format_message())}{hint}", err=True)
            return exc.exit_code
        except click.ClickException as exc:
            click.echo(f"{prog_name}: error: {_one_line(exc.format_message())}", err=True)
            return exc.exit_code
        except (click.Abort, KeyboardInterrupt):
            click.echo(f"{prog_name}: interrupted", err=True)
            return 130
        except InvalidInputError as exc:
            click.echo(f"{prog_name}: error: {_one_line(str(exc))}", err=True)
            return 2
        except AetherError as exc:
            click.echo(f"{prog_name}: error: {_one_line(str(exc))}{_hint(exc)}", err=True)
            return 1
        except Exception as exc:
            if os.environ.get(_DEBUG_ENV):
                traceback.print_exc()
            click.echo(f"{prog_name}: internal error: {type(exc).__name__}: {_one_line(str(exc))} "
                       f"(set {_DEBUG_ENV}=1 for the traceback)", err=True)
            return 1
        return rv if isinstance(rv, int) else 0


def _hint(exc: AetherError) -> str:
    if isinstance(exc, NatsConnectionError) and "connection refused" in str(exc):
        return "; start a server with: aether server (or give its URL with --nats-url)"
    return ""


class CommandFailed(click.ClickException):
    """A command failed; printed as one line, exit code ``code``."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = code  # type: ignore[misc]


def fail(message: str, code: int = 1) -> NoReturn:
    """Stop the command with one error line and exit code ``code``."""
    raise CommandFailed(message, code)


class _Signals:
    """How the running command reacts to SIGINT (and SIGTERM): see :func:`run`."""

    def __init__(self) -> None:
        self.received: int | None = None
        self.task: asyncio.Task[Any] | None = None
        self.graceful: Callable[[], None] | None = None

    def handle(self, sig: int) -> None:
        first = self.received is None
        if first:
            self.received = sig
        if self.graceful is not None and first:
            self.graceful()
        elif self.task is not None and (first or self.graceful is not None):
            self.task.cancel()  # a second Ctrl-C cuts a graceful stop short (cleanup still runs)


_signals: _Signals | None = None


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to completion for a command.

    Ctrl-C (SIGINT) cancels it, at any moment, and makes the command exit 130 once its cleanup
    ran (``KeyboardInterrupt``, turned into "interrupted" and code 130 by :class:`AetherGroup`).
    A command that stops gracefully registers its stop with :func:`on_stop_signals` instead
    (a second Ctrl-C then cancels it); it still exits 130 after a SIGINT (0 after a SIGTERM).
    """
    global _signals
    state = _Signals()

    async def main() -> T:
        state.task = asyncio.current_task()
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGINT, state.handle, signal.SIGINT)
        return await coro

    _signals = state
    try:
        result = asyncio.run(main())
    except asyncio.CancelledError:
        if state.received is None:
            raise
        raise KeyboardInterrupt from None
    finally:
        _signals = None
        coro.close()  # never started when interrupted at once: no "never awaited" warning
    if state.received == signal.SIGINT:
        raise KeyboardInterrupt
    return result


def on_stop_signals(stop: Callable[[], None]) -> None:
    """In a coroutine given to :func:`run`: SIGINT and SIGTERM call ``stop()`` (a graceful stop,
    once) instead of cancelling the command. The command exits 130 after SIGINT, 0 after SIGTERM."""
    state = _signals
    loop = asyncio.get_running_loop()
    if state is None:  # not under run(): both signals just call stop
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(sig, stop)
        return
    state.graceful = stop
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, state.handle, signal.SIGTERM)
    if state.received is not None:  # interrupted before the command got here
        stop()


def forget_stop_signals() -> None:
    """Undo :func:`on_stop_signals`: from now on SIGINT cancels the command again (exit 130)."""
    loop = asyncio.get_running_loop()
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.remove_signal_handler(signal.SIGTERM)
    state = _signals
    if state is None:
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.remove_signal_handler(signal.SIGINT)
    else:
        state.graceful = None


def out_console(*, stderr: bool = False) -> Console:
    """The console for tables: the terminal's width, or 160 columns when output is piped."""
    console = Console(stderr=stderr)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(stderr=stderr, width=160)
    return console


def emit_json(value: Any) -> None:
    """Write ``value`` as one line of JSON on stdout (events, datetimes and Structs included)."""
    click.echo(msgspec.json.encode(value).decode())


def connection_options(function: F) -> F:
    """Add the NATS connection options; the command receives ``connect: ConnectOptions``."""
    options = [
        click.option("--nats-url", "-s", envvar=ENV_URL, show_envvar=True, metavar="URL",
                     help="NATS server URL(s), comma-separated [default: nats://127.0.0.1:4222]."),
        click.option("--user", envvar="AETHER_NATS_USER", help="User name (with --password)."),
        click.option("--password", envvar="AETHER_NATS_PASSWORD", help="Password (with --user)."),
        click.option("--token", envvar="AETHER_NATS_TOKEN", help="Authentication token."),
        click.option("--creds", envvar="AETHER_NATS_CREDS", type=click.Path(dir_okay=False),
                     help="Credentials file (JWT + nkey)."),
        click.option("--nkey-seed", type=click.Path(dir_okay=False), help="File with an nkey seed."),
        click.option("--tls-ca", type=click.Path(dir_okay=False), help="CA bundle to verify the server."),
        click.option("--tls-cert", type=click.Path(dir_okay=False), help="Client certificate (with --tls-key)."),
        click.option("--tls-key", type=click.Path(dir_okay=False), help="Client private key."),
        click.option("--connect-timeout", type=click.FloatRange(min=0.1), default=5.0, show_default=True,
                     help="Seconds to wait for the connection."),
    ]

    @functools.wraps(function)
    def wrapper(*args: Any, nats_url: str | None, user: str | None, password: str | None, token: str | None,
                creds: str | None, nkey_seed: str | None, tls_ca: str | None, tls_cert: str | None,
                tls_key: str | None, connect_timeout: float, **kwargs: Any) -> Any:
        kwargs["connect"] = ConnectOptions(url=nats_url, user=user, password=password, token=token, creds=creds,
                                           nkey_seed=nkey_seed, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key,
                                           name="aether-cli", connect_timeout=connect_timeout, retry_refused=False)
        return function(*args, **kwargs)

    result: Any = wrapper
    for option in reversed(options):
        result = option(result)
    return result  # type: ignore[no-any-return]


def store_options(function: F) -> F:
    """Add ``--stream`` and ``--namespace``."""
    function = click.option("--namespace", "-n", envvar="AETHER_NAMESPACE", show_envvar=True, default=None,
                            help="Namespace (tenant); each has its own stream.")(function)
    function = click.option("--stream", envvar="AETHER_STREAM", show_envvar=True, default=DEFAULT_STREAM,
                            show_default=True, help="Stream base name.")(function)
    return function
