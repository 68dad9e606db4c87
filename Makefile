# Entry points, each creating its own virtual environment in .venv:
#   make demo   - install and run the main job on the embedded default
#   make test   - install, lint (ruff, mypy) and run the test suite
#   make lint   - install and run only the linters (ruff on src and tests, mypy on src/caloforge)
PYTHON ?= python3
VENV   ?= .venv
BIN     = $(VENV)/bin
DEMO_DIR ?= demo-output

.PHONY: install demo lint test bench clean

$(BIN)/caloforge: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(BIN)/caloforge

install: $(BIN)/caloforge

demo: install
	$(BIN)/caloforge demo -o $(DEMO_DIR)

lint: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy

test: install
	$(BIN)/ruff check src tests
	$(BIN)/mypy
	$(BIN)/python -m pytest -q

bench: install
	$(BIN)/python benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(DEMO_DIR) build src/*.egg-info
