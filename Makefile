# Two commands a new user needs: `make serve` and `make test`. Each creates .venv and
# installs exactly what it needs. torch==2.13.0 is installed first and alone because
# that exact CPU build is what the test machines carry; any other version is a GB download.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# The real-face test assets: ../shared/data when it is beside the clone (tests skip, with a
# reason, whatever needs them when it is absent).
SHARED_DATA := $(abspath ../shared/data)
FACEGATE_TEST_DATA ?= $(if $(wildcard $(SHARED_DATA)/MANIFEST.md),$(SHARED_DATA),)
export FACEGATE_TEST_DATA

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

# glibc's per-thread malloc arenas made RSS creep under 32 concurrent clients
# (+10.4 % over 60 s; +8.7 % and flat in the second half with 2 arenas: bench/load.py).
serve: $(VENV)/.serve
	MALLOC_ARENA_MAX=2 $(BIN)/facegate serve --host $(HOST) --port $(PORT)

test: $(VENV)/.test
	@if [ -z "$(FACEGATE_TEST_DATA)" ]; then echo "FACEGATE_TEST_DATA unset and no ../shared/data: the real-face tests will skip"; \
	else echo "test assets: $(FACEGATE_TEST_DATA)"; fi
	$(BIN)/python -m pytest $(PYTEST_ARGS)

# The peer that bench/peer.py measures: face_recognition (dlib). Its wheel must go in
# with --no-deps, and it needs setuptools<81 (FACTS.md); kept out of pyproject for that.
$(VENV)/.peer: $(VENV)/.test
	$(BIN)/pip install -q 'setuptools<81' dlib-bin==20.0.1.post1 face-recognition-models==0.3.0
	$(BIN)/pip install -q --no-deps face-recognition==1.3.0
	touch $@

bench: $(VENV)/.peer
	$(BIN)/python bench/run_all.py

lint: $(VENV)/.test
	$(BIN)/ruff check service training tests bench

clean:
	rm -rf $(VENV) .pytest_cache
