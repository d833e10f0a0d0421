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
