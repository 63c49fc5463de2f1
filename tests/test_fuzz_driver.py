"""tests/fuzz.py, the driver of `make fuzz`: counts, a saved failing input, its replay."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests import fuzz


def test_a_clean_run_counts_every_input(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(fuzz, "OUT", str(tmp_path))
    assert fuzz.main(["sasl_decoding", "--inputs", "301", "--jobs", "1", "--shards", "2",
                      "--seed", "1"]) == 0
    row = next(line for line in (tmp_path / "summary.txt").read_text().splitlines()
               if line.startswith("sasl_decoding"))
    assert row.split()[1] == "301"
    assert "0 failure(s)" in capsys.readouterr().out


def test_a_failure_is_saved_replayable_and_fails_the_run(tmp_path, monkeypatch, capsys):
    @settings(database=None)
    @given(st.binary(max_size=20))
    def test_boom(data):
        assert b"\xff" not in data

    known = fuzz.targets
    monkeypatch.setattr(fuzz, "targets", lambda: {**known(), "boom": test_boom})
    monkeypatch.setattr(fuzz, "OUT", str(tmp_path))
    assert fuzz.main(["boom", "--inputs", "100000", "--jobs", "1", "--seed", "1"]) == 1
    out = capsys.readouterr().out
    saved = list(tmp_path.glob("boom-*.bin"))
    assert len(saved) == 1
    assert "FAILED: AssertionError" in out and f"--replay {saved[0]}" in out
    try:
        fuzz.main(["--replay", str(saved[0])])
    except AssertionError:
        pass
    else:
        raise AssertionError("the saved input passed on replay")
