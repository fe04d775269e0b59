# lvmsuper: `make demo` and `make test` each set everything up on a fresh Debian 12.
PYTHON      ?= /usr/bin/python3
VENV        := .venv
APT_PACKAGES := lvm2 libsystemd-dev pkg-config dbus polkitd pkexec sudo socat python3-venv python3-dev gcc

.PHONY: install system-packages demo test test-unit typecheck bench clean install-system install-dm test-dm

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

# mypy sees the packages under their import names through a symlinked tree.
typecheck: install
	mkdir -p build/typecheck/lvmsuper
	ln -sfn $(CURDIR)/client build/typecheck/lvmsuper/client
	ln -sfn $(CURDIR)/supervisor build/typecheck/lvmsuper/supervisor
	cd build/typecheck && $(CURDIR)/$(VENV)/bin/python -m mypy --config-file $(CURDIR)/pyproject.toml \
		-p lvmsuper.client -p lvmsuper.supervisor

# The host tier, then the device-mapper tier in a guest kernel (tests/dm, make test-dm).
test: install typecheck
	$(VENV)/bin/python -m pytest -q tests --ignore=tests/dm
	$(MAKE) --no-print-directory test-dm

test-unit: install
	$(VENV)/bin/python -m pytest -q tests -m 'not system'

# With Debian's lvm2-dbusd installed (`apt-get install lvm2-dbusd`; not installed here:
# on a systemd host the package enables a daemon of its own), the benchmark also
# measures lvmdbusd, started on its private bus; without it, a note says so.
bench: install
	$(VENV)/bin/python benchmarks/bench.py

# Where a distribution puts things (DESTDIR for packagers: then nothing else is done;
# without it the daemon goes into a venv under /opt/lvmsuper and the group is created
# from the sysusers.d file, as a package's postinst would).
UNITDIR     ?= /lib/systemd/system
DBUSDIR     ?= /usr/share/dbus-1
POLKITDIR   ?= /usr/share/polkit-1
SYSUSERSDIR ?= /usr/lib/sysusers.d
DOCDIR      ?= /usr/share/doc/lvmsuper
install-system:
	install -D -m 0644 systemd/lvmsuper.service $(DESTDIR)$(UNITDIR)/lvmsuper.service
	install -D -m 0644 systemd/lvmsuper.socket $(DESTDIR)$(UNITDIR)/lvmsuper.socket
	install -D -m 0644 systemd/lvmsuper.sysusers $(DESTDIR)$(SYSUSERSDIR)/lvmsuper.conf
	install -D -m 0644 systemd/org.lvmsuper.Supervisor1.conf $(DESTDIR)$(DBUSDIR)/system.d/org.lvmsuper.Supervisor1.conf
	install -D -m 0644 systemd/org.lvmsuper.Supervisor1.service $(DESTDIR)$(DBUSDIR)/system-services/org.lvmsuper.Supervisor1.service
	install -D -m 0644 polkit/org.lvmsuper.policy $(DESTDIR)$(POLKITDIR)/actions/org.lvmsuper.policy
	install -D -m 0644 polkit/50-lvmsuper.rules $(DESTDIR)$(DOCDIR)/examples/50-lvmsuper.rules
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	@if [ -z "$(DESTDIR)" ]; then \
		set -e; \
		if command -v systemd-sysusers >/dev/null; then \
			systemd-sysusers $(SYSUSERSDIR)/lvmsuper.conf; \
		else \
			getent group lvmsuper >/dev/null || groupadd --system lvmsuper; \
		fi; \
		test -x /opt/lvmsuper/bin/python || $(PYTHON) -m venv /opt/lvmsuper; \
		/opt/lvmsuper/bin/pip install -q '.[daemon]'; \
		ln -sf /opt/lvmsuper/bin/lvmsuperd /usr/bin/lvmsuperd; \
		ln -sf /opt/lvmsuper/bin/lvmsuperctl /usr/bin/lvmsuperctl; \
		echo "installed; now: systemctl daemon-reload && systemctl enable --now lvmsuper.socket"; \
	fi

clean:
	rm -rf $(VENV) build dist *.egg-info

# Device-mapper test tier: tests/dm runs as root inside a throwaway QEMU guest that
# boots Debian's own kernel over this machine's root filesystem (tools/dm-guest).
# `make test-dm DM_TESTS=tests/dm/test_x.py` runs a part. Results in $(DM_RESULTS):
# dm.xml (junit), console.log (the guest kernel's console, whose last lines are also
# printed when the guest fails), daemon-logs/ (the guest lvmsuperd's logs).
DM_APT_PACKAGES := qemu-system-x86 linux-image-amd64 busybox-static thin-provisioning-tools
DM_RESULTS      ?= build/dm-results
DM_TESTS        ?= tests/dm

install-dm: install
	@missing=$$(for p in $(DM_APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing Debian packages:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@test -x $(VENV)/bin/vng || $(VENV)/bin/pip install -q virtme-ng

test-dm: install-dm
	rm -rf $(DM_RESULTS) && mkdir -p $(DM_RESULTS)
	$(PYTHON) tools/dm-guest --timeout 900 --boot-timeout 150 \
		--console-log $(DM_RESULTS)/console.log --rwdir $(DM_RESULTS) -- \
		env LVMSUPER_DM_RESULTS=$(CURDIR)/$(DM_RESULTS) \
		$(CURDIR)/$(VENV)/bin/python -m pytest -q -p no:cacheprovider $(DM_TESTS) --junitxml=$(CURDIR)/$(DM_RESULTS)/dm.xml

# Opt-in soak: the load test at 1,000,000 requests instead of the in-suite 100,000
# (tests/test_load.py; about ten times as long). SOAK_REQUESTS=n runs n instead.
SOAK_REQUESTS ?= 1
.PHONY: soak
soak: install
	LVMSUPER_SOAK=$(SOAK_REQUESTS) $(VENV)/bin/python -m pytest -q -s -p no:cacheprovider tests/test_load.py
