# plantwatch: `make demo` runs the agent against a simulated plant; `make test` runs the tests.
# Both create or refresh the local virtualenv (.venv) and build the Cython kernels first.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
NODE_DIR := tests/opcua_interop

.PHONY: demo test bench build venv system-deps node lint docs clean lock wheelhouse

# what the tests need from the OS: a real broker, a libmodbus server, a virtual serial cable,
# systemd-analyze to judge the unit (tests/test_systemd.py), headless Chromium and its driver for the
# console's browser tests (tests/test_console.py), PostgreSQL's server binaries for the store of
# `plantwatch receive --store` (tests/postgres.py starts its own; Debian keeps initdb off PATH)
APT_NEEDS := mosquitto:mosquitto socat:socat pkg-config:pkg-config systemd-analyze:systemd \
	chromium:chromium chromedriver:chromium-driver
# a font has no command: any font that covers Chinese (fc-list :lang=zh) will do, else this one, so the
# console's Chinese labels render in the browser tests' screenshots rather than as empty boxes
CJK_FONT := fonts-wqy-microhei

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

$(STAMP): pyproject.toml setup.py | $(BIN)/python
	$(BIN)/python -m pip install -q "setuptools>=77" wheel "Cython>=3" "numpy>=1.26"
	$(BIN)/python -m pip install -q --no-build-isolation -e ".[test,bench]"
	touch $@

venv: $(STAMP)

# The gateway's runtime dependencies, pinned with their hashes (CPython 3.11, x86_64 Linux);
# no test, bench or build packages. Regenerate after changing [project] dependencies.
LOCK       := requirements/gateway.txt
WHEELHOUSE ?= dist/wheelhouse

lock: $(BIN)/python
	$(BIN)/python -m pip install -q uv
	$(BIN)/uv pip compile pyproject.toml --generate-hashes --python-version 3.11 \
		--python-platform x86_64-manylinux_2_28 --custom-compile-command "make lock" -q -o $(LOCK)

# Every wheel an offline gateway needs, in one folder and one archive: the locked dependencies
# (downloaded, checked against the lock's hashes) and plantwatch itself with its compiled kernels
# (built here, so the gateway needs no compiler), plus requirements.txt (the lock and the
# plantwatch wheel's hash) and SHA256SUMS. Build it on the gateways' OS release and architecture.
wheelhouse: $(STAMP)
	rm -rf $(WHEELHOUSE) $(WHEELHOUSE).tar.gz && mkdir -p $(WHEELHOUSE)
	$(BIN)/python -m pip download -q --only-binary=:all: --no-deps --require-hashes -r $(LOCK) -d $(WHEELHOUSE)
	$(BIN)/python -m pip wheel -q --no-deps --no-build-isolation -w $(WHEELHOUSE) .
	# the build's by-product would shadow the editable install's entry points for commands run here
	rm -rf plantwatch.egg-info
	cd $(WHEELHOUSE) && whl=$$(ls plantwatch-*.whl) && \
		{ cat $(CURDIR)/$(LOCK); echo "plantwatch==$$(echo $$whl | cut -d- -f2) \\"; \
		  echo "    --hash=sha256:$$(sha256sum $$whl | cut -d' ' -f1)"; } > requirements.txt && \
		sha256sum *.whl requirements.txt > SHA256SUMS
	tar -czf $(WHEELHOUSE).tar.gz -C $(dir $(abspath $(WHEELHOUSE))) $(notdir $(abspath $(WHEELHOUSE)))
	@echo "$(WHEELHOUSE).tar.gz: $$(ls $(WHEELHOUSE)/*.whl | wc -l) wheels"

# rebuild the kernels whenever ext/*.pyx changed (Cython skips unchanged ones)
build: $(STAMP)
	$(BIN)/python setup.py -q build_ext --inplace

system-deps:
	@missing=""; \
	for pair in $(APT_NEEDS); do \
		cmd=$${pair%%:*}; pkg=$${pair##*:}; \
		command -v $$cmd >/dev/null || [ -x /usr/sbin/$$cmd ] || missing="$$missing $$pkg"; \
	done; \
	pkg-config --exists libmodbus 2>/dev/null || missing="$$missing libmodbus-dev"; \
	command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || missing="$$missing postgresql"; \
	[ -n "$$(fc-list :lang=zh family 2>/dev/null)" ] || dpkg -s $(CJK_FONT) >/dev/null 2>&1 || \
		missing="$$missing $(CJK_FONT)"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	fi

node:
	@if ! command -v node >/dev/null || ! command -v npm >/dev/null; then \
		echo "installing node and npm"; \
		$(SUDO) apt-get update -qq && DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq nodejs npm; \
	fi
	@if [ -f $(NODE_DIR)/package.json ] && [ ! -d $(NODE_DIR)/node_modules ]; then \
		npm install --prefix $(NODE_DIR) --no-audit --no-fund --loglevel=error; \
	fi

demo: build
	$(BIN)/plantwatch demo --seconds 40

# the layering of DESIGN.md first (import-linter contracts in pyproject.toml), then the tests
test: build system-deps node
	$(BIN)/lint-imports --no-logo
	$(BIN)/python -m pytest -q

bench: build
	PLANTWATCH_BENCH=1 $(BIN)/python -m pytest -q tests/bench --benchmark-only --benchmark-columns=min,median,mean,ops
	$(BIN)/python bench/kernels.py
	$(BIN)/python bench/computed.py --kinds
	$(BIN)/python bench/skab.py
	$(BIN)/python bench/train_replay.py
	$(BIN)/python bench/trend.py
	@echo "driver and alarm-path benchmarks (minutes each): see docs/PERFORMANCE.md"

lint: $(STAMP)
	$(BIN)/ruff check agent drivers detectors tests bench

# the key tables of docs/CONFIG.md, from the declarations the config loader reads with
docs: $(STAMP)
	$(BIN)/python -m agent.config.docs --write

clean:
	rm -rf build dist $(VENV) detectors/*.so ext/*.c
