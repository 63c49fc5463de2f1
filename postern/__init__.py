"""Postern, installed under one name: the mail proxy (postern.proxy) and the toolkit that
proves one right (postern.fakes, postern.checkauth, postern.scenarios, postern.loadtest,
postern.reports).

In a checkout these live in the top-level folders proxy/, fakes/, ...; the installed
distribution maps them below this package (pyproject.toml's package-dir). Without an
install, a checkout's root on sys.path finds them through the __path__ extension below.
"""

from pathlib import Path

_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "proxy" / "session.py").is_file() and str(_checkout) not in __path__:
    __path__.append(str(_checkout))


def import_root() -> str:
    """The folder to put on a child's PYTHONPATH so that its `python -m postern` runs this
    same copy (a checkout's root, or site-packages)."""
    return str(Path(__file__).resolve().parent.parent)
