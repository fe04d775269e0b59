# lvmsuper: `make demo` and `make test` each set everything up on a fresh Debian 12.
PYTHON      ?= /usr/bin/python3
VENV        := .venv
APT_PACKAGES := lvm2 libsystemd-dev pkg-config dbus polkitd pkexec sudo socat python3-venv python3-dev gcc

.PHONY: install system-packages demo test test-unit lint bench clean

install: system-packages $(VENV)/.installed

# Installs only what is missing; needs root when something is.
system-packages:
	@missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# Built from /usr/bin/python3 so unprivileged test users can run it.
$(VENV)/.installed: pyproject.toml
	test -x $(VENV)/bin/python || $(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q -e '.[daemon,dev]'
	touch $@

demo: install
	$(VENV)/bin/python tools/demo.py

test: install
	$(VENV)/bin/python -m mypy client supervisor
	$(VENV)/bin/python -m pytest -q tests

test-unit: install
	$(VENV)/bin/python -m pytest -q tests -m 'not system'

bench: install
	$(VENV)/bin/python benchmarks/bench.py

clean:
	rm -rf $(VENV) build dist *.egg-info
