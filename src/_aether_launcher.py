"""Entry point of the ``aether`` console script.

It lives outside the ``aether`` package on purpose: importing ``aether`` and the command line
(nats-py, msgspec, click, rich) takes a few hundred milliseconds, and this module runs *before*
that, so that

* Ctrl-C during start-up exits 130 with one line (not a ``KeyboardInterrupt`` traceback from
  the middle of an import);
* a missing ``cli`` extra is one line naming the extra to install (not ``ModuleNotFoundError``).

Its first statement installs the SIGINT handler, through ``_signal`` (the C module under
``signal``, which imports nothing).
"""

import _signal  # type: ignore[import-not-found]
import os
import sys


def _interrupted_now(signum: int, frame: object) -> None:
    os.write(2, b"aether: interrupted\n")
    os._exit(130)


# While importing, a Ctrl-C ends the process at once (nothing to clean up yet).
_signal.signal(_signal.SIGINT, _interrupted_now)

__all__ = ["main"]

_CLI_MODULES = frozenset({"click", "rich"})


def main() -> None:
    """Import the command line and run it; exits the process."""
    _signal.signal(_signal.SIGINT, _interrupted_now)
    try:
        from aether.cli import main as cli_main
    except ModuleNotFoundError as exc:
        if (exc.name or "").split(".")[0] not in _CLI_MODULES:
            raise
        sys.stderr.write(f"aether: the command line needs the 'cli' extra ({exc.name} is missing): "
                         "pip install 'aether-nats[cli]'\n")
        sys.exit(1)
    _signal.signal(_signal.SIGINT, _signal.default_int_handler)
    cli_main()
