# streamrec: two commands for a new user (README):
#   make demo   set everything up and run the main job
#   make test   the whole test suite against real Kafka and Redis (.ci/run calls this)

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.streamrec-installed
export PIP_DISABLE_PIP_VERSION_CHECK := 1
export TF_CPP_MIN_LOG_LEVEL := 2

.PHONY: install demo test unit lint format services-up services-down services-status bench clean

# The development tooling (local Kafka and Redis, tools/devservices) is a separate distribution,
# installed editable beside the runtime package: the runtime wheel does not carry it.
$(STAMP): pyproject.toml tools/devservices/pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 10) else "Python >= 3.10 needed")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip setuptools wheel
	@echo "installing streamrec and its dependencies into $(VENV) (TensorFlow is the big one: a minute or two)"
	$(BIN)/python -m pip install --progress-bar on -e '.[test]' -e tools/devservices
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/streamrec demo

# Lint first (seconds), then every test; pytest's exit 5 (no test ran) is a failure here.
test: install lint
	$(BIN)/python -m pytest -p no:cacheprovider; rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest ran no test: failing"; exit 1; fi; exit $$rc

unit: install
	$(BIN)/python -m pytest -m "not integration"

# mypy cannot follow the editable install's import hook: give it a link tree instead.
# lint-imports checks the layer contracts of pyproject.toml on the same tree.
lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	mkdir -p .mypy_tree/streamrec
	ln -sfn ../../streaming .mypy_tree/streamrec/streaming
	ln -sfn ../../model .mypy_tree/streamrec/model
	ln -sfn ../../consumers .mypy_tree/streamrec/consumers
	ln -sfn ../tools/devservices/streamrec_devservices .mypy_tree/streamrec_devservices
	$(BIN)/mypy -p streamrec.streaming -p streamrec.consumers -p streamrec_devservices
	PYTHONPATH=.mypy_tree $(BIN)/lint-imports --no-cache --no-logo

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

services-up: install
	$(BIN)/streamrec services up
services-down: install
	$(BIN)/streamrec services down
services-status: install
	$(BIN)/streamrec services status

bench: install
	$(BIN)/streamrec bench all

.PHONY: docs
docs: install ; $(BIN)/python tools/gen_config_docs.py

clean: services-down
	rm -rf $(VENV) .mypy_tree .pytest_cache .ruff_cache .mypy_cache
