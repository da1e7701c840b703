# Radiogate: one task runner for people and CI.
#   make run   - install what is missing, start PostgreSQL, Orthanc and Radiogate (Ctrl-C stops)
#   make test  - lint, type-check and run the whole test suite against real services, twice:
#                with the pynetdicom accelerator as configured and with it off
#   make bench - throughput benchmarks (not part of the tests)

VENV        ?= .venv
PYTHON      ?= python3
APT_PACKAGES = orthanc orthanc-python orthanc-dicomweb dcmtk dicom3tools postgresql openssl mosquitto chromium
SUDO        := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: ohif bench-deid run test lint typecheck unit integration bench system-deps venv clean

run: system-deps venv ohif
	$(VENV)/bin/radiogate run

# The suite runs twice: as configured (the accelerator on where pynetdicom is verified), then
# with stock pynetdicom throughout (the processes the tests start inherit both settings).
test: system-deps venv ohif lint typecheck
	$(VENV)/bin/pytest
	RADIOGATE_SCP__ACCELERATE=off RADIOGATE_FORWARD__ACCELERATE=off $(VENV)/bin/pytest

lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: venv
	$(VENV)/bin/mypy

unit: venv
	$(VENV)/bin/pytest tests/unit

integration: system-deps venv ohif
	$(VENV)/bin/pytest tests/integration

bench: system-deps venv
	$(VENV)/bin/python bench/bench_receive.py

# De-identification speed vs the deid and dicognito packages (installed for the benchmark only,
# into bench/results/.venv-deid).
bench-deid: venv
	$(VENV)/bin/python bench/bench_deid.py

# Debian packages; the packaged Orthanc service is stopped and disabled when we install it,
# because Radiogate runs its own Orthanc (ports 8042/4242) under ./var.
system-deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  $(SUDO) apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $(SUDO) apt-get install -y -qq $$missing; \
	  case "$$missing" in *orthanc*) \
	    ($(SUDO) systemctl disable --now orthanc 2>/dev/null || $(SUDO) service orthanc stop 2>/dev/null || true);; \
	  esac; \
	fi

venv: $(VENV)/.installed

# OHIF v3, the prebuilt dist/ of @ohif/app, pinned by version and sha512 in ohif/package.json and
# unpacked into ohif/dist (not in git). The tarball alone is fetched with npm: dist/ is
# self-contained, and the registry does not carry every package @ohif/app lists as a dependency.
OHIF_VERSION   = $(shell sed -n 's/^ *"version": "\(.*\)",*$$/\1/p' ohif/package.json | tail -1)
OHIF_INTEGRITY = $(shell sed -n 's/^ *"integrity": "\(.*\)"$$/\1/p' ohif/package.json)

ohif: ohif/dist/.installed

ohif/dist/.installed: ohif/package.json
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	  (cd "$$tmp" && npm pack --silent "@ohif/app@$(OHIF_VERSION)" >/dev/null) && \
	  got="sha512-$$(openssl dgst -sha512 -binary "$$tmp"/ohif-app-$(OHIF_VERSION).tgz | base64 -w0)" && \
	  if [ "$$got" != "$(OHIF_INTEGRITY)" ]; then \
	    echo "@ohif/app $(OHIF_VERSION): integrity $$got, expected $(OHIF_INTEGRITY)" >&2; exit 1; fi && \
	  tar -xzf "$$tmp"/ohif-app-$(OHIF_VERSION).tgz -C "$$tmp" package/dist && \
	  rm -rf ohif/dist && mv "$$tmp"/package/dist ohif/dist && \
	  echo "@ohif/app $(OHIF_VERSION) $(OHIF_INTEGRITY)" > $@

# pyradiomics builds C extensions against the numpy already in the venv, not in pip's isolated
# build environment; pinned, because the 3.1.0 sdist reports another version (3.0.1a1) and pip
# refuses it.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	$(VENV)/bin/pip install -q setuptools wheel
	$(VENV)/bin/pip install -q --no-build-isolation pyradiomics==3.0.1
	touch $@

clean:
	rm -rf $(VENV) ohif/dist .mypy_cache .ruff_cache .pytest_cache *.egg-info
