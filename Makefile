# The two commands of the README: `make run` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

run: $(STAMP)
	$(BIN)/hie db upgrade
	$(BIN)/hie demo load
	$(BIN)/hie auth demo-client --base http://127.0.0.1:8080
	$(BIN)/hie serve --host 127.0.0.1 --port 8080

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/pytest -n 2 --dist loadfile $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

SIZE ?= 1000
BACKEND ?= both
WORKLOADS ?= W1,W2,W3,W4,W5,W7,W8,limit

# The suite of issue 6 (bench/README.md): SIZE residents (several: SIZE=1000,10000), BACKEND sqlite|postgres|both.
bench: $(STAMP)
	$(BIN)/python -m bench.regional.run --size $(SIZE) --backend $(BACKEND) --workloads $(WORKLOADS)

clean:
	rm -rf $(VENV) var .pytest_cache
