# polynimbus: the two commands a user needs are `make demo` and `make test`.
# Every Debian package and Python dependency is installed here, so a fresh clone works.
SHELL := /bin/bash
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# Debian packages the lab and the tests use (tool -> package map lives in src/polynimbus/capabilities.py).
DEB_PACKAGES := iproute2 iputils-ping iperf3 nftables wireguard-tools wireguard-go keepalived fping tcpdump procps kmod util-linux ethtool nebula openvpn strongswan-swanctl charon-systemd libcharon-extra-plugins libstrongswan-standard-plugins

.PHONY: help deps venv demo test test-unit test-integration lint golden bench lock clean

help:
	@echo "make demo   - install what is needed, then run the three-site PrEstoCloud demo"
	@echo "make test   - install what is needed, then run the whole test suite"
	@echo "make lint   - ruff (lint and format check) and mypy; make test runs it too"
	@echo "make lock   - re-pin constraints.txt (review the diff)"
	@echo "make golden - regenerate the golden plan files (review the diff)"
	@echo "make bench  - run the benchmarks (results go to docs/benchmarks.md by hand)"

# Install missing Debian packages only (apt-get update runs only when something is missing).
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q "ok installed" || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends $$missing; \
	fi

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

# constraints.txt pins every Python package to the versions the suite was last run with.
$(VENV)/.installed: pyproject.toml constraints.txt | $(BIN)/activate
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test]'
	touch $@

venv: $(VENV)/.installed

demo: deps venv
	$(BIN)/polynimbus demo

test: deps venv lint
	$(BIN)/python -m pytest -q tests

test-unit: venv
	$(BIN)/python -m pytest -q tests -m "not integration"

test-integration: deps venv
	$(BIN)/python -m pytest -q tests -m integration

lint: venv
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench
	$(BIN)/mypy

golden: venv
	$(BIN)/python tests/golden/regenerate.py

bench: deps venv
	$(BIN)/python bench/plan_scale.py
	$(BIN)/python bench/lab_cycle.py
	$(BIN)/python bench/throughput_ratio.py
	$(BIN)/python bench/chain_campaign.py
	$(BIN)/python bench/chain_rate.py
	$(BIN)/python bench/tenants.py
	$(BIN)/python bench/tenant_scale.py

# Re-pin constraints.txt from a fresh resolution (then review the diff and run make test).
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/pip install -q --upgrade pip
	.venv-lock/bin/pip install -q -e '.[test]'
	.venv-lock/bin/pip freeze --exclude-editable | grep -v '^polynimbus' > constraints.txt
	rm -rf .venv-lock

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .mypy_cache .ruff_cache
