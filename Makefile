PYTHON ?= python3
PIP ?= $(PYTHON) -m pip
# Debian packages: Cyrillic typewriter and serif faces for the synthetic captcha generator.
APT_PACKAGES = fonts-freefont-ttf fonts-liberation2 fonts-urw-base35 fonts-paratype fonts-cmu fonts-dejavu-core

.PHONY: install-system install test lint

install-system:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(APT_PACKAGES); \
	else echo "not root or no apt-get: install $(APT_PACKAGES) yourself"; fi

install: install-system
	$(PIP) install -r requirements-dev.txt

test: install
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check . && $(PYTHON) -m ruff format --check .
