# Every target creates .venv with the pinned CI set when it is missing (or out of date).
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.installed

.PHONY: demo notebooks docs test lab lint clean browser

$(STAMP): requirements-ci.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -r requirements-ci.txt
	touch $@

## demo: the main job on the embedded default, offline: `kdna finetune` on a folder of real digits
## (EfficientNet-Lite0, KernelDNA adapters beside norms + head), then `kdna predict`; runs/demo/
demo: $(STAMP)
	$(BIN)/kdna demo

## notebooks: execute every notebook and write HTML copies to build/notebooks/
notebooks: $(STAMP)
	PLOTLY_RENDERER=plotly_mimetype+notebook $(BIN)/jupyter nbconvert --to html --execute --output-dir build/notebooks notebooks/*.ipynb
	@echo "Executed notebooks written to $(CURDIR)/build/notebooks/"

## docs: the site to read without running anything, offline, in build/site/: the README, every
## notebook executed with its figures, the benchmark tables, the API reference from docstrings.
## Reuses the notebooks `make test` executed (build/executed/) and executes the others.
docs: $(STAMP)
	$(BIN)/python tools/docs_site.py
	@echo "Open build/site/index.html, or serve it: $(BIN)/python -m http.server -d build/site"

## browser: Debian's chromium for the test that renders figures in a real browser (needs root
## and apt-get; where it cannot be installed, that test is skipped and says why)
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	{ [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1 && \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; } || \
	echo "chromium could not be installed: the browser test will be skipped"

## test: lint, unit tests and the notebooks (nbval) in one pytest run, with a fresh, empty cache
## root (KDNA_CACHE, removed afterwards) so that nothing passes on results an earlier run cached
test: $(STAMP) browser
	$(BIN)/ruff check .
	cache=$$(mktemp -d) && trap 'rm -rf "$$cache"' EXIT && \
	KDNA_CACHE=$$cache $(BIN)/python -m pytest tests notebooks --nbval-lax --nbval-current-env

## lab: JupyterLab on notebooks/, on 127.0.0.1 only, with token authentication
lab: $(STAMP)
	$(BIN)/jupyter lab --ServerApp.ip=127.0.0.1 --ServerApp.root_dir=notebooks --no-browser \
		$(if $(filter 0,$(shell id -u)),--allow-root)

clean:
	rm -rf build .pytest_cache .ruff_cache
