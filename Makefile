# One file for every task: `make demo` and `make test` each work on a fresh clone.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PLUGINS := $(wildcard plugins/visionkit-*)
EXAMPLE_PLUGINS := $(wildcard examples/visionkit-*)
# The demo: weights name (looked up in VISIONKIT_WEIGHTS, then downloaded) and image (default: a bundled photo).
DEMO_WEIGHTS ?= yolov8n.pt
DEMO_IMAGE ?=
PYTEST_ARGS ?=

.PHONY: install demo test wheels lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

# Core + every built-in plugin + the example third-party plugin, editable, with torch pinned. One pip call:
# the plugins' `visionkit-core` requirement is met by the checkout given with -e, never fetched from an index.
# A venv made before the core was renamed holds a `visionkit` distribution over the same files: drop it first.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt $(wildcard plugins/*/pyproject.toml) $(wildcard examples/*/pyproject.toml)
	@if $(BIN)/pip show --quiet visionkit >/dev/null 2>&1; then $(BIN)/pip uninstall --quiet --yes visionkit; fi
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]" $(addprefix -e ,$(PLUGINS)) $(addprefix -e ,$(EXAMPLE_PLUGINS))
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python examples/demo.py --weights "$(DEMO_WEIGHTS)" $(if $(DEMO_IMAGE),--image "$(DEMO_IMAGE)") --save-dir runs/demo

# pytest exits 5 when it collects nothing; that is not a failure of the suite.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

# Build the sdists and wheels of the core and every plugin, check them, install the wheels into a fresh
# venv and smoke-test them from outside the checkout (what a user of the published packages gets).
wheels: install
	.ci/wheels

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy visionkit

bench: install
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit $$?; done

# Every public name documented; every fenced block of README.md and docs/ run or marked with why not.
docs: install
	$(BIN)/python -m pytest -q tests/test_lazy_and_public.py -k documented
	$(BIN)/python -m pytest -q tests/test_docs.py tests/test_install_hints.py

clean:
	rm -rf $(VENV) runs build dist *.egg-info
