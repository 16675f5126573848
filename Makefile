# nm-vpn-netns: build, test, demo and install.
#
#   make demo       install what is missing, build, and show an isolated VPN on the built-in rig
#   make check      the whole test suite (what CI runs)
#   make bench      benchmarks on the rig; figures go to BENCHMARKS.md
#   make man        generate the man pages and shell completions into target/doc-gen
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
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d

BIN_DIR = target/$(PROFILE)
DOC_DIR = target/doc-gen
AGENT_NAME = io.github.NmVpnNetns.Agent1
# NM reads /usr/lib before /etc and the first file for a service wins, so ours must replace the
# stock file; the stock one is moved aside under a name that does not end in .name.
STOCK_NAME = $(NMVPNDIR)/nm-openvpn-service.name
DIVERTED_NAME = $(STOCK_NAME).distrib
CARGO_PROFILE_FLAG = $(if $(filter release,$(PROFILE)),--release,--profile $(PROFILE))

.PHONY: all build man deps demo check lint unit privileged release-lib e2e bench install uninstall divert undivert clean

all: build

deps:
	bash tests/e2e/deps.sh

build:
	$(CARGO) build --locked $(CARGO_PROFILE_FLAG)

# Man pages and completions, rendered by the built CLI (README, "Man pages and completions").
man: build
	rm -rf $(DOC_DIR)
	$(BIN_DIR)/nm-vpn-netns generate-docs $(DOC_DIR)

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
	@# The docs come from the binary being installed, generated outside the tree, which may
	@# belong to another user.
	docs=$$(mktemp -d) && trap 'rm -rf "$$docs"' EXIT && \
	    $(BIN_DIR)/nm-vpn-netns generate-docs "$$docs" >/dev/null && \
	    for page in "$$docs"/man/*.[58]; do \
	        gzip -9n "$$page" && \
	        install -D -m 644 "$$page.gz" "$(DESTDIR)$(MANDIR)/man$${page##*.}/$${page##*/}.gz" || exit 1; \
	    done && \
	    install -D -m 644 "$$docs/completions/nm-vpn-netns.bash" $(DESTDIR)$(BASHCOMPDIR)/nm-vpn-netns && \
	    install -D -m 644 "$$docs/completions/_nm-vpn-netns" $(DESTDIR)$(ZSHCOMPDIR)/_nm-vpn-netns && \
	    install -D -m 644 "$$docs/completions/nm-vpn-netns.fish" $(DESTDIR)$(FISHCOMPDIR)/nm-vpn-netns.fish
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
	rm -f $(DESTDIR)$(MANDIR)/man5/nm-vpn-netns.5.gz $(DESTDIR)$(MANDIR)/man8/nm-vpn-netns.8.gz \
	    $(DESTDIR)$(MANDIR)/man8/nm-vpn-netns-*.8.gz $(DESTDIR)$(BASHCOMPDIR)/nm-vpn-netns \
	    $(DESTDIR)$(ZSHCOMPDIR)/_nm-vpn-netns $(DESTDIR)$(FISHCOMPDIR)/nm-vpn-netns.fish
	! grep -q '^program=.*/nm-vpn-netns-service$$' $(DESTDIR)$(STOCK_NAME) 2>/dev/null || rm $(DESTDIR)$(STOCK_NAME)
	$(if $(DESTDIR),,$(MAKE) -s undivert)
	$(if $(DESTDIR),,-dbus-send --system --type=method_call --dest=org.freedesktop.DBus / org.freedesktop.DBus.ReloadConfig 2>/dev/null)

clean:
	$(CARGO) clean
