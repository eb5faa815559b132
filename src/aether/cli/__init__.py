"""The ``aether`` command line (extra ``cli``: click + rich).

Commands: ``server``, ``events show|tail|stats``, ``cluster status``, ``node``, ``demo``,
``dashboard``.
Every failure prints one line on stderr and exits non-zero; see ``docs/cli.md``.
"""

from __future__ import annotations

import os
import signal
import sys
from types import FrameType

import click

from aether import __version__
from aether.cli._common import AetherGroup
from aether.cli.cluster import cluster
from aether.cli.dashboard import dashboard
from aether.cli.demo import demo
from aether.cli.events import events
from aether.cli.node import node
from aether.cli.server import server

__all__ = ["cli", "main"]


@click.group(name="aether", cls=AetherGroup,
             context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 110})
@click.version_option(__version__, prog_name="aether")
def cli() -> None:
    """Aether: distributed event-sourcing primitives on NATS JetStream."""


cli.add_command(server)
cli.add_command(events)
cli.add_command(cluster)
cli.add_command(node)
cli.add_command(demo)
cli.add_command(dashboard)


def _exit_interrupted(signum: int, frame: FrameType | None) -> None:
    os._exit(130)


def main() -> None:
    """Run the command line and exit the process with its code (0 ok, 1 failed, 2 bad usage, 130 Ctrl-C)."""
    try:
        code = int(cli.main(prog_name="aether", standalone_mode=False))
    except KeyboardInterrupt:  # between the command's own handling and here
        click.echo("aether: interrupted", err=True)
        code = 130
    # Only the exit is left (flushing, joining threads): a Ctrl-C now ends the process at once.
    signal.signal(signal.SIGINT, _exit_interrupted)
    sys.exit(code)
