"""The ``asyncmail`` console script: send, batch, serve, check and demo.

Click and Rich are the ``cli`` extra. ``main`` imports them only when it runs, so a missing
extra prints the install command instead of a traceback (exit code 2).
"""

from __future__ import annotations

import sys

__all__ = ["main"]

INSTALL_HINT = "pip install 'asyncmail[cli]'"


def main(argv: list[str] | None = None) -> None:
    """Run the command line; exits with 0 (all delivered), 1 (some not), 2 (usage) or 130."""
    try:
        import click  # noqa: F401
        import rich  # noqa: F401
    except ImportError as exc:
        print(
            f"the asyncmail command needs the 'cli' extra ({exc.name} is missing): {INSTALL_HINT}",
            file=sys.stderr,
        )
        raise SystemExit(2) from None
    from ._app import cli

    cli.main(args=argv, prog_name="asyncmail")
