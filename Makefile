# cardiacnets: `make demo` and `make test` set everything up on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEMO_OUT ?= runs/demo
PYTEST_ARGS ?=

.PHONY: install demo test bench clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/cardiacnets demo --out $(DEMO_OUT)

# The browser tests drive Debian's Chromium (never `playwright install`, which downloads a browser).
CHROMIUM ?= /usr/bin/chromium
export CARDIACNETS_CHROMIUM := $(CHROMIUM)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo )

$(CHROMIUM):
	$(SUDO)apt-get update -qq
	$(SUDO)env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-liberation

test: $(STAMP) $(CHROMIUM)
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/cardiacnets bench preprocess --output runs/bench/preprocess.json
	$(BIN)/cardiacnets bench synth --output runs/bench/synth.json

clean:
	rm -rf runs .pytest_cache build *.egg-info
