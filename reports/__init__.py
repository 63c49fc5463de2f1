"""One self-contained HTML report from the latest results: `python -m reports`."""

from reports.render import Inputs, render_report

__all__ = ["Inputs", "render_report"]
