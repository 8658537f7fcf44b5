# Two commands a new user needs: `make serve` and `make test`. Each creates .venv and
# installs exactly what it needs. torch==2.13.0 is installed first and alone because
# that exact CPU build is what the test machines carry; any other version is a GB download.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000

.PHONY: serve test bench lint clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(VENV)/.serve: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e '.[serve]'
	touch $@

$(VENV)/.test: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[serve,train,dev]'
	touch $@ $(VENV)/.serve

serve: $(VENV)/.serve
	$(BIN)/facegate serve --host $(HOST) --port $(PORT)

test: $(VENV)/.test
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: $(VENV)/.test
	$(BIN)/python bench/run_all.py

lint: $(VENV)/.test
	$(BIN)/ruff check service training tests bench

clean:
	rm -rf $(VENV) .pytest_cache
