PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# Debian packages: curl for the README examples; wrk for the benchmark; nginx and redis-server for the deployment test; Cyrillic typewriter and serif faces for the synthetic captcha generator; chromium for the browser end-to-end test.
APT_PACKAGES = curl wrk nginx redis-server fonts-freefont-ttf fonts-liberation2 fonts-urw-base35 fonts-paratype fonts-cmu fonts-dejavu-core chromium

.PHONY: install-system install install-serve serve test lint

install-system:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	else echo "not root or no apt-get: install $(APT_PACKAGES) yourself"; fi

install: install-system
	$(PIP) install -r requirements-dev.txt
	npm ci --prefix clients/node

install-serve:
	$(PIP) install -r requirements.txt

serve: install-serve
	$(PYTHON) -m gunicorn -c gunicorn.conf.py

test: install
	$(PYTHON) -m pytest
	PYTHON=$(PYTHON) npm test --prefix clients/node

lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .
