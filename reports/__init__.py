"""One self-contained HTML report from the latest results: `python -m postern.reports`."""

from postern.reports.render import Inputs, render_report

__all__ = ["Inputs", "render_report"]
