"""The ``aether`` command line (extra ``cli``: click + rich).

Commands: ``server``, ``events show|tail|stats``, ``cluster status``, ``node``, ``demo``,
``dashboard``.
Every failure prints one line on stderr and exits non-zero; see ``docs/cli.md``.
"""

from __future__ import annotations

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


def main() -> int:
    """Entry point of the ``aether`` console script (exits the process)."""
    return int(cli.main(prog_name="aether"))
