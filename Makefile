# The two commands of the README: `make run` (the embedded lab) and `make test` (everything).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: run test fuzz bench load report lint

$(BIN)/.installed: pyproject.toml
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv >/dev/null && \
	    rm -rf $(VENV) && $(PYTHON) -m venv $(VENV); \
	  else echo "python3 -m venv failed: install python3-venv" >&2; exit 1; fi; }
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev,load]'
	@touch $@

run: $(BIN)/.installed
	$(BIN)/postern lab

test: $(BIN)/.installed
	@bash scripts/ensure-system-deps
	@mkdir -p results
	$(BIN)/python -m pytest tests scenarios --target postern --target nginx \
	  --junitxml=results/junit.xml $(PYTEST_ARGS)

# Property tests of every parser and machine at FUZZ_INPUTS inputs each (10^6 by default),
# fed through hypothesis's fuzz_one_input by FUZZ_JOBS processes (tests/fuzz.py). A failing
# input is saved under results/fuzz/ with the command that replays it, and in .hypothesis/,
# so that `HYPOTHESIS_PROFILE=fuzz pytest tests/test_fuzz.py` replays and shrinks it too.
FUZZ_INPUTS ?= 1000000
FUZZ_JOBS   ?= $(shell nproc 2>/dev/null || echo 2)
fuzz: $(BIN)/.installed
	$(BIN)/python -m tests.fuzz --inputs $(FUZZ_INPUTS) --jobs $(FUZZ_JOBS) $(FUZZ_ARGS)

bench: $(BIN)/.installed
	$(BIN)/python -m postern.loadtest.bench
	$(BIN)/python -m postern.reports --out results/report.html

load: $(BIN)/.installed
	$(BIN)/locust -f loadtest/ --headless -u 20 -r 5 -t 60s --time-scale 0.1 \
	  --csv results/load --csv-full-history --html results/locust.html

report: $(BIN)/.installed
	$(BIN)/python -m postern.reports --out results/report.html

lint: $(BIN)/.installed
	$(BIN)/ruff check postern proxy fakes checkauth scenarios loadtest reports tests
