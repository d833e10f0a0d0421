"""Errors that users see. Each message names the bad input and says how to fix it."""

from __future__ import annotations


class SelfsupError(Exception):
    """Base class of every error selfsup raises on purpose."""


class InputError(SelfsupError, ValueError):
    """Bad user input: a malformed SMILES, reaction, template, image or config value."""


class ConfigError(InputError):
    """An unknown config key, a wrong type or an unparsable override."""


class DataNotFoundError(SelfsupError, FileNotFoundError):
    """A dataset could not be found or fetched from any of its sources."""


def command_main(main) -> int:
    """Run ``main()`` of a ``python -m`` module command: a :class:`SelfsupError` ends it with a
    one-line ``python -m <module>: error: ...`` on stderr and exit status 2 (as the ``selfsup``
    command does) instead of a traceback."""
    import sys

    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    prog = f"python -m {spec.name}" if spec is not None else sys.argv[0]
    try:
        main()
    except SelfsupError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2
    return 0
