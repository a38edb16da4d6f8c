# bookseg: `make help` lists the targets.
PYTHON ?= python
EXP ?= smoke
SWEEP ?= anchors
PORT ?= 5000
# `make server`: plain `=` so that only the command line (make server HOST=0.0.0.0) changes the bind address,
# not a HOST some shells export.
HOST = 127.0.0.1
SERVER_STORE ?= sqlite:///mlflow-server.db
SERVER_ARTIFACTS ?= mlflow-server-artifacts

.DEFAULT_GOAL := help
.PHONY: help setup lint format test test-all run experiment sweep ui server print-config check-data clean

help: ## List the targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-14s\033[0m %s\n", $$1, $$2}'

setup: ## Install bookseg and its dependencies (editable) into the current Python
	$(PYTHON) -m pip install --upgrade pip
	$(PYTHON) -m pip install -e ".[dev]"

lint: ## ruff: lint rules and formatting (what `make test` checks first)
	$(PYTHON) -m ruff check bookseg hydra_plugins samples tests benchmarks notebooks
	$(PYTHON) -m ruff format --check bookseg hydra_plugins samples tests benchmarks notebooks

format: ## Apply ruff's formatting and safe fixes
	$(PYTHON) -m ruff format bookseg hydra_plugins samples tests benchmarks notebooks
	$(PYTHON) -m ruff check --fix bookseg hydra_plugins samples tests benchmarks notebooks

test: lint ## Lint, then run the default test suite (minutes; long runs excluded); fails if no test ran
	$(PYTHON) -m pytest -m "not slow" -q --durations=15; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

test-all: ## Run every test, including the slow ones (main job quality, long resumes)
	$(PYTHON) -m pytest -q --durations=15; rc=$$?; [ $$rc -eq 5 ] && exit 1; exit $$rc

run: ## Run the main job: 3-fold CV on the synthetic shelves (minutes on a CPU)
	$(PYTHON) -m bookseg.run

experiment: ## Run one experiment: make experiment EXP=anchors_small
	$(PYTHON) -m bookseg.run +experiment=$(EXP)

sweep: ## Run a sweep preset: make sweep SWEEP=anchors (conf/sweep/)
	$(PYTHON) -m bookseg.run +sweep=$(SWEEP)

ui: ## Serve the MLflow UI on http://127.0.0.1:$(PORT) for $$MLFLOW_TRACKING_URI, else ./mlflow.db
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(PYTHON) -m mlflow ui \
	    --backend-store-uri "$${MLFLOW_TRACKING_URI:-sqlite:///mlflow.db}" --host 127.0.0.1 --port $(PORT) --workers 1

server: ## Shared tracking server on http://$(HOST):$(PORT): runs in $(SERVER_STORE), artifacts proxied
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(PYTHON) -m mlflow server \
	    --backend-store-uri "$(SERVER_STORE)" --artifacts-destination "$(SERVER_ARTIFACTS)" \
	    --host $(HOST) --port $(PORT) --workers 1

print-config: ## Print the resolved config of an experiment: make print-config EXP=anchors_small
	$(PYTHON) -m bookseg.run +experiment=$(EXP) --cfg job --resolve

check-data: ## Summarise and validate a data set: make check-data DATA=path/to/via.json
	$(PYTHON) -m bookseg data check $(DATA)

clean: ## Remove caches and Hydra outputs (keeps mlflow.db and mlruns/)
	rm -rf .pytest_cache .ruff_cache outputs multirun .cache
