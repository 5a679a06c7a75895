# Two entry points do all set-up on a fresh Debian 12 machine (root, or a user with sudo):
#   make demo   - the main job on a built-in sample
#   make test   - the whole test suite (installs QGIS from Debian's packages for the plugin tests)
SHELL := /bin/bash
SYSTEM_PYTHON ?= /usr/bin/python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get
BASE_PACKAGES := python3 python3-venv python3-pip
QGIS_PACKAGES := qgis python3-qgis qgis-providers

.PHONY: demo test env system-packages qgis lint bench clean plugin-zip docs

demo: env
	$(VENV)/bin/road-extractor demo --out demo-output

test: qgis env
	QT_QPA_PLATFORM=offscreen $(PY) -m pytest

plugin-zip: env
	$(PY) -m road_extractor.packaging --out dist/road_extractor.zip

lint: env
	$(VENV)/bin/ruff check core training road_extractor tests benchmarks docs

bench: env
	$(PY) benchmarks/model_throughput.py

# The documentation site from docs/ (mkdocs.yml) into site/; strict: a broken link or a missing page fails.
docs: env
	$(PY) -m mkdocs build --strict -d site

env: $(VENV)/.installed

# The environment sees the system's site-packages so that QGIS's Python bindings (apt) import in it.
$(VENV)/.installed: pyproject.toml constraints.txt | system-packages
	$(SYSTEM_PYTHON) -m venv --system-site-packages $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -c constraints.txt -e '.[dev]'
	touch $@

system-packages:
	@dpkg -s $(BASE_PACKAGES) >/dev/null 2>&1 || { $(APT) update -q && $(APT) install -y -q --no-install-recommends $(BASE_PACKAGES); }

qgis: system-packages
	@dpkg -s $(QGIS_PACKAGES) >/dev/null 2>&1 || { $(APT) update -q && $(APT) install -y -q --no-install-recommends $(QGIS_PACKAGES); }

clean:
	rm -rf $(VENV) demo-output build dist site *.egg-info
