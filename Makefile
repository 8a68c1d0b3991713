# The newcomer's whole interface: `make serve`, `make test`, `make bench`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: serving needs only the package and its runtime dependencies; tests and lint add the extras.
SERVE_STAMP := $(VENV)/.installed-serve
STAMP := $(VENV)/.installed-dev

.PHONY: serve test lint typecheck bench bench-quick bench-limits bench-micro bench-dedup chaos chaos-pg power-loss docs clean clean-data \
	redis-tools fuse-tools screenshots browser-tools

$(SERVE_STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e .
	touch $(SERVE_STAMP)

$(STAMP): $(SERVE_STAMP)
	$(BIN)/pip install --quiet -e '.[test,dev]'
	touch $(STAMP)

serve: $(SERVE_STAMP)
	$(BIN)/querator serve $(if $(CONFIG),--config $(CONFIG),)

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check querator tests bench examples
	$(BIN)/ruff format --check querator tests bench examples
	$(BIN)/mypy

docs: $(STAMP)
	$(BIN)/python -m querator.commands.docgen > docs/commands.md

# The benchmarks compare against redis-server on this machine; install it (Debian) when missing.
redis-tools:
	@command -v redis-server >/dev/null && command -v redis-benchmark >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server redis-tools)

bench: $(STAMP) redis-tools
	$(BIN)/python -m bench.run

bench-quick: $(STAMP) redis-tools
	$(BIN)/python -m bench.run --quick

# What QPRODUCE ... DEDUP costs against plain QPRODUCE, alternated on one server (docs/benchmarks.md).
bench-dedup: $(STAMP) redis-tools
	$(BIN)/python -m bench.dedup

# What bounds the goals not reached: CPU per request against a bare uvloop server, the engine alone, the disk.
bench-limits: $(STAMP) redis-tools
	$(BIN)/python -m bench.limits

# PostgreSQL: the driver comparison (docs/adr/0012-postgres-driver.md) and the plain SQL queue to compare
# the postgres backend with. Each runs its own throwaway cluster (bench/pgcluster.py).
.PHONY: postgres bench-pg bench-pg-drivers bench-pgqueue
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql)

# bench.run's PostgreSQL workloads alone: Querator on 1 and 2 nodes against the plain SKIP LOCKED queue.
bench-pg: $(STAMP) postgres
	$(BIN)/python -m bench.run --only cycle-pg produce-batch-pg handoff-pg backlog-pg $(ARGS)

bench-pg-drivers: $(STAMP) postgres
	$(BIN)/python -m bench.pg_drivers

bench-pgqueue: $(STAMP) postgres
	$(BIN)/python -m bench.pgqueue

# The hot functions alone (parser, encoder, keys and ids, one partition step), compared with the last run
# saved on this machine (.benchmarks/, not in git: timings belong to their machine).
bench-micro: $(STAMP)
	$(BIN)/python -m pytest tests/micro --benchmark-enable --benchmark-autosave \
	  $(if $(wildcard .benchmarks),--benchmark-compare,)

# RocksDB in both durability modes, then three postgres nodes on one throwaway database (chaos-pg alone).
chaos: $(STAMP) postgres
	$(BIN)/python -m bench.chaos --durability both
	$(BIN)/python -m bench.chaos --backend postgres --nodes 3

chaos-pg: $(STAMP) postgres
	$(BIN)/python -m bench.chaos --backend postgres --nodes 3

# The power-loss test mounts its FUSE filesystem (bench/lazyfs.py) with libfuse3 and fusermount3 (Debian).
fuse-tools:
	@command -v fusermount3 >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3)

# Power cuts under the server's data directory, 30 per durability mode (docs/reliability.md).
power-loss: $(STAMP) fuse-tools
	$(BIN)/python -m bench.power_loss --durability both

# The dashboard's browser tests and screenshots use Debian's chromium (ADR 16); install it when missing.
browser-tools:
	@command -v chromium >/dev/null || \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium)

# The dashboard images of the README and docs/operations.md, from a real server with traffic.
screenshots: $(STAMP) browser-tools
	$(BIN)/python -m tests.screenshots

# Caches and the virtualenv only: queues and their items are never deleted by a clean-up.
clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis

# Deletes every queue and item of the default data directory (./data).
clean-data:
	rm -rf data
