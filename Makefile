# auditlog: `make run` sets everything up and starts the service; `make test` runs every check.
SHELL := /bin/bash
ROOT := $(CURDIR)
VENV := .venv
PY := $(VENV)/bin/python
BUF := node_modules/.bin/buf
# Tool caches live inside the project's ignored folders, so reruns on one machine are fast.
export PIP_CACHE_DIR := $(ROOT)/.tools/pip-cache
export npm_config_cache := $(ROOT)/.tools/npm-cache
export GOMODCACHE := $(ROOT)/.tools/gomodcache
export GOCACHE := $(ROOT)/.tools/gocache
export GOFLAGS := -modcacherw
export CARGO_HOME := $(ROOT)/.tools/cargo
export CARGO_TARGET_DIR := $(ROOT)/.tools/cargo-target
# rustup puts cargo in ~/.cargo/bin, which not every shell has on its PATH.
export PATH := $(ROOT)/.tools/bin:$(PATH):$(HOME)/.cargo/bin

NATIVE := service/auditlog_service/_native.so
PY_SOURCES := service tests bench clients/python/examples $(filter-out clients/python/src/auditlog/v1,$(wildcard clients/python/src/auditlog/*.py))

.PHONY: setup chromium console-test run test sdk-test lint typecheck proto-lint proto-breaking generate check-generated pytest bench screenshots clean

# The console's sources, including the generated TypeScript messages it imports.
CONSOLE_SOURCES := $(shell find console/src console/index.html console/vite.config.ts clients/typescript/src/gen -type f 2>/dev/null)

setup: $(VENV)/.installed $(NATIVE) node_modules/.installed .tools/bin/ferretdb.stamp .tools/bin/sdk-tools.stamp console/dist/index.html chromium

$(VENV)/.installed: pyproject.toml clients/python/pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e clients/python -e '.[dev,bench]'
	touch $@

# The service's native write path (service/native, Rust): built with the machine's cargo against
# the venv's Python, into the package (never committed); renamed into place, so a running server
# keeps the file it loaded.
$(NATIVE): $(VENV)/.installed service/native/Cargo.toml service/native/Cargo.lock $(wildcard service/native/src/*.rs)
	PYO3_PYTHON=$(ROOT)/$(PY) cargo build -q --release --locked --manifest-path service/native/Cargo.toml
	cp $(CARGO_TARGET_DIR)/release/lib_native.so $@.tmp && mv -f $@.tmp $@

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

.tools/bin/ferretdb.stamp: tools/install-ferretdb $(wildcard tools/patches/ferretdb-*.patch)
	tools/install-ferretdb

.tools/bin/sdk-tools.stamp: tools/install-sdk-tools node_modules/.installed
	tools/install-sdk-tools
	touch $@

console/node_modules/.installed: console/package.json console/package-lock.json
	cd console && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
	touch $@

# The HTTP port serves console/dist at /; the browser tests drive it.
console/dist/index.html: console/node_modules/.installed $(CONSOLE_SOURCES)
	cd console && npm run build --silent
	touch $@

# The browser tests drive Debian's chromium through Playwright (never a browser download).
chromium:
	@command -v chromium >/dev/null || { apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium; }

run: setup
	tools/run-dev

generate: setup
	$(BUF) generate

# The committed generated code must be exactly what the contract produces.
check-generated: generate
	@git add -N clients >/dev/null 2>&1 || true
	@if ! git diff --quiet --exit-code -- clients; then \
	  git diff --stat -- clients; \
	  echo "generated code drifted from proto/: run 'make generate' and commit the result"; exit 1; \
	fi
	@echo "generated code matches proto/"

proto-lint: setup
	$(BUF) lint
	$(BUF) format --diff --exit-code

proto-breaking: setup
	tools/buf-breaking

lint: setup
	$(VENV)/bin/ruff check $(PY_SOURCES)
	$(VENV)/bin/ruff format --check $(PY_SOURCES)
	cargo fmt --check --manifest-path service/native/Cargo.toml
	PYO3_PYTHON=$(ROOT)/$(PY) cargo clippy -q --release --locked --manifest-path service/native/Cargo.toml -- -D warnings

typecheck: setup
	$(VENV)/bin/mypy -p auditlog_service -p auditlog

pytest: setup
	$(PY) -m pytest -q

# The Go, TypeScript and Java SDK tests, against a live server and database of their own.
sdk-test: setup
	$(PY) -m auditlog_service.devdb with-server -- tools/test-sdks

# The console's unit tests and strict type check (its browser tests are in pytest: tests/browser).
console-test: console/node_modules/.installed
	cd console && npm run --silent typecheck && npm test --silent

test: lint typecheck proto-lint proto-breaking check-generated console-test pytest sdk-test

# The README's pictures of the console (docs/screenshots/), retaken by its browser tests.
screenshots: setup
	AUDITLOG_UPDATE_SCREENSHOTS=1 $(PY) -m pytest -q tests/browser -k screenshots

# The benchmarks with their baselines side by side, into bench/results/*.md|json, and a plot of
# them (bench/results/summary.png): about 10 minutes here; FULL=1 for the 1,000,000-event runs.
# Not part of `test`: they measure the machine as much as the code.
bench: $(VENV)/.installed $(NATIVE) .tools/bin/ferretdb.stamp
	$(PY) -m bench $(if $(FULL),--full)

clean:
	rm -rf .data .pytest_cache .mypy_cache .ruff_cache
