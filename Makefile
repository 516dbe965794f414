# Two commands on a fresh machine with python3: `make run` (the server) and `make test` (the tests).
# Each creates the virtualenv in .venv on first use.
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run stdio test check bench bench-postgres bench-guard bench-import bench-api bench-events bench-mcp-floor install

$(BIN)/budget-mcp: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $@

install: $(BIN)/budget-mcp

run: install  ## the server on streamable HTTP, http://127.0.0.1:8013/mcp, on the SQLite ledger in the user data dir
	$(BIN)/budget-mcp serve --transport http

stdio: install  ## the server on stdio, as MCP clients start it
	$(BIN)/budget-mcp serve

test: install  ## the test suite
	scripts/test

check: install  ## formatting, lint and types
	scripts/check

bench: install  ## ledger benchmark (add ARGS=--quick for a short run)
	$(BIN)/python benchmarks/ledger_bench.py $(ARGS)

bench-postgres: install  ## PostgreSQL benchmark: starts its own server (needs postgresql-15); ARGS=--quick for a short run
	$(BIN)/python benchmarks/postgres_bench.py $(ARGS)

bench-guard: install  ## what the guard adds to an LLM call: embedded SQLite and PostgreSQL, remote; ARGS=--quick
	$(BIN)/python benchmarks/guard_bench.py $(ARGS)

bench-import: install  ## import of a 100,000-row hal0 file against a raw sqlite3 executemany of the same rows; ARGS=--quick
	$(BIN)/python benchmarks/import_bench.py $(ARGS)

bench-api: install  ## POST /api/v1/charge against GET /health on one served budget-mcp; ARGS=--quick
	$(BIN)/python benchmarks/api_bench.py $(ARGS)

bench-mcp-floor: install  ## the MCP SDK client's own round trip (bare SDK server vs budget-mcp), the remote guard's floor
	$(BIN)/python benchmarks/mcp_floor_bench.py $(ARGS)

bench-events: install  ## event fan-out: lag from commit to receipt at 1 and 100 SSE listeners; ARGS=--quick
	$(BIN)/python benchmarks/events_bench.py $(ARGS)
