"""HTML reports of runs."""

from .html import write_report

__all__ = ["write_report"]
