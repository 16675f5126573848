# nm-vpn-netns: build, test, demo and install.
#
#   make demo       install what is missing, build, and show an isolated VPN on the built-in rig
#   make check      the whole test suite (what CI runs)
#   make bench      benchmarks on the rig; figures go to BENCHMARKS.md
#   make install    install into $(DESTDIR)$(PREFIX) (run as root; see README)

PREFIX ?= /usr
DESTDIR ?=
CARGO ?= cargo
PROFILE ?= release

BINDIR ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec
NMLIBDIR ?= $(PREFIX)/lib/NetworkManager
NMVPNDIR ?= $(NMLIBDIR)/VPN
DBUSDIR ?= $(PREFIX)/share/dbus-1
UNITDIR ?= $(PREFIX)/lib/systemd/system

BIN_DIR = target/$(PROFILE)
AGENT_NAME = io.github.NmVpnNetns.Agent1
# NM reads /usr/lib before /etc and the first file for a service wins, so ours must replace the
# stock file; the stock one is moved aside under a name that does not end in .name.
STOCK_NAME = $(NMVPNDIR)/nm-openvpn-service.name
DIVERTED_NAME = $(STOCK_NAME).distrib
CARGO_PROFILE_FLAG = $(if $(filter release,$(PROFILE)),--release,--profile $(PROFILE))

.PHONY: all build deps demo check lint unit privileged release-lib e2e bench install uninstall divert undivert clean

all: build

deps:
	bash tests/e2e/deps.sh

build:
	$(CARGO) build --locked $(CARGO_PROFILE_FLAG)

demo: deps build
	bash tests/e2e/demo.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --locked --all-targets -- -D warnings
	bash tests/layout.sh

unit:
	$(CARGO) test --locked

# Executor tests against the real kernel, in namespaces of their own (see the script).
privileged:
	bash tests/privileged.sh

e2e: build
	bash tests/e2e/run.sh

# The recording fake of the agent's system calls is for tests only; the release library has none of it.
release-lib: build
	bash tests/layout.sh --release-lib

check: deps lint unit privileged release-lib e2e

# Figures for BENCHMARKS.md; not part of check, since timings prove nothing on a noisy machine.
bench: deps build
	bash tests/e2e/run.sh b_activation b_agent_isolate

# Booted Debian 12 and 13 under qemu, systemd as PID 1: install, upgrade, agent crash and purge.
# STAND-IN until `make deb` exists: a `make install DESTDIR=` tree plays both packages.
VM_STANDIN = $(CURDIR)/target/vm/standin
.PHONY: vm
vm: build
	bash tests/vm/deps.sh
	rm -rf $(VM_STANDIN) && $(MAKE) -s install DESTDIR=$(VM_STANDIN)
	bash tests/vm/run.sh $(VM_STANDIN) $(VM_STANDIN)

# Installs what `make build` produced; it does not build, so that it can run as root in a tree
# built by a normal user (or inside the e2e rig's sandbox).
install:
	@for b in nm-vpn-netns nm-vpn-netns-agent nm-vpn-netns-service; do \
	    test -x $(BIN_DIR)/$$b || { echo "install: $(BIN_DIR)/$$b is missing; run 'make build' first" >&2; exit 1; }; done
	install -D -m 755 $(BIN_DIR)/nm-vpn-netns $(DESTDIR)$(BINDIR)/nm-vpn-netns
	install -D -m 755 $(BIN_DIR)/nm-vpn-netns-agent $(DESTDIR)$(LIBEXECDIR)/nm-vpn-netns-agent
	install -D -m 755 $(BIN_DIR)/nm-vpn-netns-service $(DESTDIR)$(NMLIBDIR)/nm-vpn-netns-service
	install -D -m 644 nm-plugin/$(AGENT_NAME).conf $(DESTDIR)$(DBUSDIR)/system.d/$(AGENT_NAME).conf
	install -d $(DESTDIR)$(DBUSDIR)/system-services $(DESTDIR)$(UNITDIR)
	sed 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' nm-plugin/$(AGENT_NAME).service.in >$(DESTDIR)$(DBUSDIR)/system-services/$(AGENT_NAME).service
	sed 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' nm-plugin/nm-vpn-netns-agent.service.in >$(DESTDIR)$(UNITDIR)/nm-vpn-netns-agent.service
	$(if $(DESTDIR),,$(MAKE) -s divert)
	install -d $(DESTDIR)$(NMVPNDIR)
	src=$(DIVERTED_NAME); [ -z "$(DESTDIR)" ] && [ -e "$$src" ] || src=nm-plugin/nm-openvpn-service.name.in; \
	    sed -e 's|^program=.*|program=$(NMLIBDIR)/nm-vpn-netns-service|' -e 's|@NMLIBDIR@|$(NMLIBDIR)|g' "$$src" \
	        >$(DESTDIR)$(STOCK_NAME).tmp && mv $(DESTDIR)$(STOCK_NAME).tmp $(DESTDIR)$(STOCK_NAME)
	$(if $(DESTDIR),,-dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig 2>/dev/null)

# Moves the stock .name aside the distribution's way (dpkg-divert, so package upgrades land
# there too), first, so that NetworkManager never sees two files for the service.
divert:
	if command -v dpkg-divert >/dev/null; then \
	    dpkg-divert --local --rename --divert $(DIVERTED_NAME) --add $(STOCK_NAME); \
	elif [ -e $(STOCK_NAME) ] && [ ! -e $(DIVERTED_NAME) ]; then \
	    mv $(STOCK_NAME) $(DIVERTED_NAME); \
	fi

undivert:
	if command -v dpkg-divert >/dev/null; then \
	    dpkg-divert --local --rename --remove $(STOCK_NAME); \
	elif [ -e $(DIVERTED_NAME) ]; then \
	    mv $(DIVERTED_NAME) $(STOCK_NAME); \
	fi

uninstall:
	rm -f $(DESTDIR)$(BINDIR)/nm-vpn-netns $(DESTDIR)$(LIBEXECDIR)/nm-vpn-netns-agent \
	    $(DESTDIR)$(NMLIBDIR)/nm-vpn-netns-service $(DESTDIR)$(DBUSDIR)/system.d/$(AGENT_NAME).conf \
	    $(DESTDIR)$(DBUSDIR)/system-services/$(AGENT_NAME).service $(DESTDIR)$(UNITDIR)/nm-vpn-netns-agent.service
	! grep -q '^program=.*/nm-vpn-netns-service$$' $(DESTDIR)$(STOCK_NAME) 2>/dev/null || rm $(DESTDIR)$(STOCK_NAME)
	$(if $(DESTDIR),,$(MAKE) -s undivert)
	$(if $(DESTDIR),,-dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig 2>/dev/null)

clean:
	$(CARGO) clean
