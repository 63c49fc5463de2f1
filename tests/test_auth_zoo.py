"""check-auth against the zoo (tests/auth_zoo): with nothing but a URL, a user and a
password it FAILs (nearly) every broken server and no correct one."""

from __future__ import annotations

import json

import pytest
from auth_zoo import BROKEN, CORRECT, ZooServer
from auth_zoo.directory import PASSWORD, USER
from auth_zoo.serve import Serving
from postern.checkauth import main

CATCH_RATE = 0.9
_results: dict[str, dict] = {}


def run_check_auth(server: ZooServer, capsys) -> dict:
    """`postern check-auth URL --user U --password P --json` (and --timeout for slowness)."""
    if server.name in _results:
        return _results[server.name]
    server.handler.__dict__.clear()  # servers with state (lockout, caches) start afresh
    extra = ["--timeout", server.timeout] if server.timeout else []
    with Serving(server.handler) as srv:
        capsys.readouterr()
        status = main([srv.url, "--user", USER, "--password", PASSWORD, "--json", *extra])
        doc = json.loads(capsys.readouterr().out)
    doc["status"] = status
    _results[server.name] = doc
    return doc


def fails(doc: dict) -> dict[str, str]:
    return {c["id"]: c["reason"] for c in doc["checks"] if c["verdict"] == "fail"}


def test_the_zoo_is_big_enough():
    assert len(BROKEN) >= 40 and len(CORRECT) >= 7
    for server in BROKEN + CORRECT:
        assert server.story, f"{server.name} has no story"


@pytest.mark.parametrize("server", CORRECT, ids=lambda s: s.name)
def test_no_fail_on_a_correct_server(server, capsys):
    doc = run_check_auth(server, capsys)
    assert fails(doc) == {}
    assert doc["status"] == 0


@pytest.mark.parametrize("server", BROKEN, ids=lambda s: s.name)
def test_broken_server(server, capsys):
    """Each broken server FAILs, or is one of the few the catch rate allows to slip."""
    doc = run_check_auth(server, capsys)
    if not fails(doc):
        pytest.xfail(f"not caught: {server.story}")
    assert doc["status"] == 1


def test_catch_rate(capsys):
    missed = [s.name for s in BROKEN if not fails(run_check_auth(s, capsys))]
    rate = 1 - len(missed) / len(BROKEN)
    assert rate >= CATCH_RATE, f"caught {rate:.0%}; missed: {', '.join(missed)}"
