# inkdeploy: everything a fresh machine needs comes from here.
#   make demo   install, boot the lab, converge the stack (site.yml), make a request over HTTPS,
#               then a canary rollout of the demo app under load
#   make test   install, lint, unit tests, lab integration tests, Molecule scenarios
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON    ?= python3
VENV      := .venv
BIN       := $(VENV)/bin
TOPOLOGY  ?= full
export PATH := $(CURDIR)/$(BIN):$(PATH)
export ANSIBLE_CONFIG := $(CURDIR)/ansible.cfg

APT_PACKAGES := $(shell sed -e 's/\#.*//' requirements/apt.txt)

.PHONY: help deps apt venv tools lint unit build-test lab-test stack-test molecule integration test demo lab-down bench bench-oncall clean artifact

help:
	@echo "make demo      install what is needed, boot the lab ($(TOPOLOGY)), converge the whole stack, show the HTTPS URL, canary-roll a new release"
	@echo "make test      install what is needed, then lint, unit, lab and Molecule tests"
	@echo "make lab-down  remove the demo lab: hosts, mounts, links, bridge, files"
	@echo "make bench     run the benchmarks under bench/"
	@echo "make bench-oncall  on the demo lab: status with one host down per tier, drain medians, restore drill"

deps: apt venv tools

# promtool and amtool from Debian's packages (the same versions the hosts run), unpacked into
# .cache/bin without installing the services: the rule tests run them on this machine.
TOOLS := .cache/bin/promtool .cache/bin/amtool
tools: $(TOOLS)

$(TOOLS):
	@rm -rf .cache/debs && mkdir -p .cache/debs .cache/bin
	cd .cache/debs && apt-get download -q prometheus prometheus-alertmanager
	for deb in .cache/debs/*.deb; do dpkg-deb -x $$deb .cache/debs/root; done
	install -m 0755 .cache/debs/root/usr/bin/promtool .cache/debs/root/usr/bin/amtool .cache/bin/
	rm -rf .cache/debs

# Install Debian packages only when one is missing, so re-runs are quick and offline-safe.
apt:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
	  echo "Installing Debian packages: $$missing"; \
	  [ "$$(id -u)" = 0 ] || { echo "Installing Debian packages needs root: run make as root."; exit 1; }; \
	  apt-get update -qq; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml requirements/constraints.txt
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "inkdeploy needs Python 3.11 or newer"'
	[ -x $(BIN)/python ] || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c requirements/constraints.txt -e '.[dev]'
	touch $@

lint: venv
	$(BIN)/ruff check orchestrator tests bench molecule roles examples plugins
	$(BIN)/ruff format --check orchestrator tests bench molecule roles examples plugins
	$(BIN)/yamllint -s .
	$(BIN)/ansible-lint

# On every core (pytest-xdist; a test file's tests stay together, so its module fixtures are
# built once).
unit: venv tools
	$(BIN)/pytest -q -n auto --dist loadfile tests/unit

# Builds the demo app's artifact for real (pip reaches PyPI) and serves requests from it.
build-test: venv
	$(BIN)/pytest -q -m build tests/build

lab-test: deps
	$(BIN)/pytest -q -m lab tests/lab

# site.yml on a seven-host lab, then the monitoring checks (targets, rules, an alert through
# Alertmanager to a test receiver), what the Grafana and ELK roles rendered, HTTPS, the page,
# Celery, the app hosts, TLS scan, drain, kill, backup and restore, every rollout strategy, bad
# canaries, rollback, SIGKILL, site.yml again (keeps what is live, changes nothing else), the
# security checks (-rP prints the figures they measure, -rs why a check skipped: the Grafana and
# Elastic service checks, without the vendor packages).
stack-test: deps
	$(BIN)/pytest -q -rsP --durations=15 -m stack tests/stack

# Every scenario in turn, each timed; a failed one does not stop the others (each still destroys
# its lab), so one CI run names every failing scenario. Exit status 1 if any failed. Ctrl-C or
# SIGTERM ends the loop and takes the running scenario's lab down (tests/molecule_all.py: a shell
# loop cannot, since Molecule exits 1 on SIGINT and bash then ignores the signal).
SCENARIOS := $(sort $(notdir $(patsubst %/molecule.yml,%,$(wildcard molecule/*/molecule.yml))))
molecule: deps
	$(BIN)/python tests/molecule_all.py $(SCENARIOS)

# The stack tests and the Molecule scenarios each bring up labs of their own on subnets of their
# own, and both spend most of their time waiting (analysis windows, apt, service restarts): they
# run side by side, each lane's whole log printed when all are done (tests/lanes.py).
integration: deps
	$(BIN)/python tests/lanes.py "stack=$(MAKE) --no-print-directory stack-test" \
	  "molecule=$(MAKE) --no-print-directory molecule"

test: deps lint unit build-test lab-test integration

# The demo app's first release; built once (pip needs PyPI), kept in dist/.
DEMO_VERSION := 1.0.0
DEMO_ARTIFACT := dist/inkapp-$(DEMO_VERSION).tar.gz

# The second release the demo's canary rollout moves to.
DEMO_NEXT := 1.1.0
DEMO_NEXT_ARTIFACT := dist/inkapp-$(DEMO_NEXT).tar.gz

$(DEMO_ARTIFACT): | $(VENV)/.installed
	$(BIN)/inkdeploy build examples/inkapp --version $(DEMO_VERSION) --out dist

$(DEMO_NEXT_ARTIFACT): | $(VENV)/.installed
	$(BIN)/inkdeploy build examples/inkapp --version $(DEMO_NEXT) --out dist

demo: deps $(DEMO_ARTIFACT) $(DEMO_NEXT_ARTIFACT)
	$(BIN)/inkdeploy lab up --topology $(TOPOLOGY)
	$(BIN)/ansible-playbook -i inventories/lab/hosts.yml playbooks/site.yml
	$(BIN)/inkdeploy lab status
	$(BIN)/inkdeploy lab web
	$(BIN)/python examples/demo_canary.py --inventory inventories/lab/hosts.yml

lab-down: venv
	$(BIN)/inkdeploy lab down

bench: deps
	$(BIN)/python bench/lab_boot.py
	$(BIN)/python bench/web_tier.py

# On the demo lab (`make demo` first): `inkdeploy status` healthy and with one host of each tier
# down, then drain/undrain under load; medians over 5 runs each; then the point-in-time restore
# drill (pgbench scale 20, 3 runs).
bench-oncall: deps
	$(BIN)/python bench/status.py
	$(BIN)/python bench/drain.py
	$(BIN)/python bench/restore.py

# The demo app as a release artifact: make artifact VERSION=1.2.3
VERSION ?= 1.0.0
artifact: venv
	$(BIN)/inkdeploy build examples/inkapp --version $(VERSION) --out dist

clean: lab-down
	rm -rf $(VENV) .cache .pytest_cache .ruff_cache
