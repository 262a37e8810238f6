"""The study report: HTML page, CSV and LaTeX tables, statistics (drawing comes from :mod:`vitlens.viz`)."""

from .study import write_report

__all__ = ["write_report"]
