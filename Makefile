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

.PHONY: install demo test lint bench docs clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade --quiet pip

# Core + every built-in plugin + the example third-party plugin, editable, with torch pinned.
$(VENV)/.installed: $(BIN)/python pyproject.toml constraints.txt $(wildcard plugins/*/pyproject.toml) $(wildcard examples/*/pyproject.toml)
	$(BIN)/pip install --quiet -c constraints.txt -e ".[dev]" $(addprefix -e ,$(PLUGINS)) $(addprefix -e ,$(EXAMPLE_PLUGINS))
	touch $@

install: $(VENV)/.installed

demo: install
	$(BIN)/python examples/demo.py --weights "$(DEMO_WEIGHTS)" $(if $(DEMO_IMAGE),--image "$(DEMO_IMAGE)") --save-dir runs/demo

# pytest exits 5 when it collects nothing; that is not a failure of the suite.
test: install
	$(BIN)/python -m pytest $(PYTEST_ARGS); rc=$$?; if [ $$rc -eq 5 ]; then echo "pytest: no tests collected"; exit 0; fi; exit $$rc

lint: install
	$(BIN)/ruff check . && $(BIN)/ruff format --check . && $(BIN)/mypy visionkit

bench: install
	@for f in benchmarks/*.py; do echo "== $$f"; $(BIN)/python $$f || exit $$?; done

docs: install
	$(BIN)/python -m pytest -q tests/test_lazy_and_public.py -k documented

clean:
	rm -rf $(VENV) runs build *.egg-info
