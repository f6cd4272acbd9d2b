PYTHON ?= python3
# Everything is installed into this virtual environment: Debian's and Ubuntu's Python refuse system-wide installs.
VENV ?= .venv
VPY := $(VENV)/bin/python
CLIENTS_VENV ?= .venv-clients
CLIENTS_VPY := $(CLIENTS_VENV)/bin/python
KUBE_VENV ?= .venv-kube
KUBE_VPY := $(KUBE_VENV)/bin/python
# Debian packages: curl for the README examples; wrk for the benchmark; nginx and redis-server for the deployment test; Cyrillic typewriter and serif faces for the synthetic captcha generator; chromium for the browser end-to-end tests.
APT_PACKAGES = python3-venv curl wrk nginx redis-server fonts-freefont-ttf fonts-liberation2 fonts-urw-base35 fonts-paratype fonts-cmu fonts-dejavu-core chromium

.PHONY: install-system install install-serve serve test lint

install-system:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	else echo "not root or no apt-get: install $(APT_PACKAGES) yourself"; fi

# The virtual environment; where venv cannot make one (Debian without python3-venv), root installs that package.
$(VPY):
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
		rm -rf $(VENV); \
		if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
			apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-venv \
			&& $(PYTHON) -m venv $(VENV); \
		else echo "$(PYTHON) -m venv failed: install python3-venv (Debian/Ubuntu) and run make again"; exit 1; fi; }

# The project itself (editable), with its training and test extras, and the Python client; the solving services'
# official clients in an environment of their own (tests/compat/requirements.txt).
install: install-system $(VPY) $(CLIENTS_VPY) $(KUBE_VPY)
	$(VPY) -m pip install -e '.[train,dev]' -e ./clients/python
	$(CLIENTS_VPY) -m pip install -r tests/compat/requirements.txt
	$(KUBE_VPY) -m pip install -r deploy/kubernetes/requirements-check.txt
	npm ci --prefix clients/node

$(CLIENTS_VPY): $(VPY)
	$(PYTHON) -m venv $(CLIENTS_VENV)

# kubectl (to render deploy/kubernetes) and checkov (its security check), for tests/test_kubernetes.py, in an
# environment of their own: checkov's dependencies would downgrade the project's (packaging).
$(KUBE_VPY): $(VPY)
	$(PYTHON) -m venv $(KUBE_VENV)

# The project (editable: the checkout is what runs) with its serving dependencies (requirements.txt).
install-serve: $(VPY)
	$(VPY) -m pip install -e .

serve: install-serve
	$(VPY) -m gunicorn -c gunicorn.conf.py

test: install
	$(VPY) -m pytest
	PYTHON=$(abspath $(VPY)) npm test --prefix clients/node

lint:
	$(VPY) -m ruff check . && $(VPY) -m ruff format --check .
