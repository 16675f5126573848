# nm-vpn-netns: build, test, demo and install.
#
#   make demo       install what is missing, build, and show an isolated VPN on the built-in rig
#   make check      the whole test suite (what CI runs)
#   make fuzz       each fuzz target for FUZZ_SECONDS (30) on the stable toolchain (part of check)
#   make bench      benchmarks on the rig; figures go to BENCHMARKS.md
#   make man        generate the man pages and shell completions into target/doc-gen
#   make install    install into $(DESTDIR)$(PREFIX) (run as root; see README)
#   make deb        target/debian/nm-vpn-netns_<version>_amd64.deb (DEB_VERSION=… for another version)
#   make vm         the package on booted Debian 12 and 13 under qemu (part of check)
#   make rpm        target/rpm/RPMS/x86_64/nm-vpn-netns-<version>-1.x86_64.rpm, for Fedora

PREFIX ?= /usr
DESTDIR ?=
CARGO ?= cargo
PROFILE ?= release

BINDIR ?= $(PREFIX)/bin
LIBEXECDIR ?= $(PREFIX)/libexec
NMLIBDIR ?= $(PREFIX)/lib/NetworkManager
NMVPNDIR ?= $(NMLIBDIR)/VPN
DBUSDIR ?= $(PREFIX)/share/dbus-1
POLKITDIR ?= $(PREFIX)/share/polkit-1/actions
UNITDIR ?= $(PREFIX)/lib/systemd/system
MANDIR ?= $(PREFIX)/share/man
BASHCOMPDIR ?= $(PREFIX)/share/bash-completion/completions
ZSHCOMPDIR ?= $(PREFIX)/share/zsh/vendor-completions
FISHCOMPDIR ?= $(PREFIX)/share/fish/vendor_completions.d

BIN_DIR = target/$(PROFILE)
DOC_DIR = target/doc-gen
AGENT_NAME = io.github.NmVpnNetns.Agent1
EXEC_ACTION = io.github.NmVpnNetns.exec
# Tools that are slow to make are cached outside the clone, keyed by their version.
CI_CACHE ?= /var/cache/nm-vpn-netns-ci
CARGO_DEB_VERSION = 3.8.0
CARGO_DEB = $(CI_CACHE)/cargo-deb-$(CARGO_DEB_VERSION)/bin/cargo-deb
CARGO_FUZZ_VERSION = 0.13.2
CARGO_FUZZ = $(CI_CACHE)/cargo-fuzz-$(CARGO_FUZZ_VERSION)/bin/cargo-fuzz
DEB_VERSION ?=
CARGO_PROFILE_FLAG = $(if $(filter release,$(PROFILE)),--release,--profile $(PROFILE))

.PHONY: all build man deps demo check lint unit fuzz privileged bench-smoke release-lib e2e bench soak deb deb-check rpm rpm-check vm install uninstall no-package clean

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
	python3 tests/e2e/bench-stats.py --self-test

unit:
	$(CARGO) test --locked

# The fuzz targets (fuzz/README.md), each for FUZZ_SECONDS, without a sanitizer: AddressSanitizer
# needs a nightly toolchain. What they find goes to a scratch corpus, so that fuzz/corpus keeps
# only the seeds; a crash fails the run and leaves its input under fuzz/artifacts/TARGET.
FUZZ_SECONDS ?= 30
# The fuzz build (release, instrumented) is kept outside the clone; cargo rebuilds what changed.
FUZZ_TARGET = $(CI_CACHE)/fuzz-target
FUZZ = PATH=$(dir $(CARGO_FUZZ)):$$PATH $(CARGO) fuzz
fuzz: $(CARGO_FUZZ)
	$(CARGO) fetch --locked --manifest-path fuzz/Cargo.toml
	@set -e; for t in $$($(FUZZ) list); do \
	    mkdir -p fuzz/target/corpus/$$t; \
	    $(FUZZ) run --sanitizer none --debug-assertions --target-dir $(FUZZ_TARGET) $$t fuzz/target/corpus/$$t fuzz/corpus/$$t \
	        $$(ls -d fuzz/regressions/$$t 2>/dev/null) -- -max_total_time=$(FUZZ_SECONDS); \
	done

# Executor tests against the real kernel, in namespaces of their own (see the script). B1's
# benchmark is among them; bench-smoke runs it, shortened.
privileged:
	bash tests/privileged.sh --skip b1::

# The benchmarks, one round each, so that they cannot rot; they assert nothing about time, but each
# asserts that it leaves nothing behind.
BENCH_SMOKE = BENCH_ROUNDS=1 BENCH_COLD_ROUNDS=1 B3_ROUNDS=1 B3_SECONDS=1 B4_ROUNDS=1 B4_CYCLES=2 B5_ROUNDS=1
BENCH_RIG = b_activation b_agent_isolate b_data_plane b_memory b_scale
bench-smoke: build
	B1_ROUNDS=1 bash tests/bench-isolate.sh
	$(BENCH_SMOKE) bash tests/e2e/run.sh $(BENCH_RIG)

e2e: deb
	bash tests/e2e/run.sh

# The recording fake of the agent's system calls is for tests only; the release library has none of it.
release-lib: build
	bash tests/layout.sh --release-lib

check: deps lint unit fuzz privileged bench-smoke release-lib deb-check rpm-check e2e vm

# Figures for BENCHMARKS.md; not part of check, since timings prove nothing on a noisy machine.
# Each benchmark prints its own tables, and adds its differences, ratios and key figures to
# $(BENCH_SUMMARY); the run ends with them in one table.
BENCH_SUMMARY = $(CURDIR)/target/bench-summary.md
bench: deps build
	rm -f $(BENCH_SUMMARY)
	BENCH_SUMMARY=$(BENCH_SUMMARY) PROFILE=$(PROFILE) bash tests/bench-isolate.sh
	BENCH_SUMMARY=$(BENCH_SUMMARY) PROFILE=$(PROFILE) B1_STATE=tmpfs bash tests/bench-isolate.sh
	BENCH_SUMMARY=$(BENCH_SUMMARY) bash tests/e2e/run.sh $(BENCH_RIG)
	@echo; echo "**make bench, $$(git describe --always --dirty), $$(nproc) cores, kernel $$(uname -r), $$(date -u +%F)**"; echo
	@python3 tests/e2e/bench-stats.py --summary $(BENCH_SUMMARY)

# The e2e rig's up/down cycles, 50 instead of check's 20; not part of check, for its length.
soak: deps build
	E2E_CYCLES=$${E2E_CYCLES:-50} bash tests/e2e/run.sh t_fault_cycles

# $(call cached_install,CRATE,VERSION): a cargo tool from crates.io (Debian has none), built once
# into the cache under a temporary name, then renamed into place, so that an interrupted build is
# never used.
define cached_install
rm -rf $(CI_CACHE)/$(1)-$(2).tmp
$(CARGO) install --locked --version $(2) --root $(CI_CACHE)/$(1)-$(2).tmp $(1)
mv $(CI_CACHE)/$(1)-$(2).tmp $(CI_CACHE)/$(1)-$(2)
endef

$(CARGO_DEB):
	$(call cached_install,cargo-deb,$(CARGO_DEB_VERSION))

$(CARGO_FUZZ):
	$(call cached_install,cargo-fuzz,$(CARGO_FUZZ_VERSION))

deb: build $(CARGO_DEB)
	bash packaging/debian/build.sh $(CARGO_DEB) $(DEB_VERSION)

# lintian's errors fail the build; its warnings are explained in packaging/README.md.
deb-check: deb
	shellcheck -S warning -s sh target/debian-gen/scripts/*
	lintian --fail-on error --tag-display-limit 0 target/debian/nm-vpn-netns_*.deb
	bash tests/deb-postrm.sh

# The RPM packs what `make build` produced (packaging/rpm/nm-vpn-netns.spec says how); --nodeps, as
# this Debian has none of the Fedora packages it requires. The spec's Version, which its %changelog
# repeats, must be Cargo.toml's.
RPM_TOPDIR = $(CURDIR)/target/rpm
rpm: build
	@spec=$$(sed -n 's/^Version: *//p' packaging/rpm/nm-vpn-netns.spec); \
	    cargo=$$(sed -n 's/^version = "\(.*\)"$$/\1/p' Cargo.toml | head -1); \
	    [ "$$spec" = "$$cargo" ] || { echo "rpm: the spec is at $$spec, Cargo.toml at $$cargo" >&2; exit 1; }
	rm -rf $(RPM_TOPDIR)
	rpmbuild -bb --nodeps --quiet --define '_topdir $(RPM_TOPDIR)' packaging/rpm/nm-vpn-netns.spec
	@ls $(RPM_TOPDIR)/RPMS/x86_64/*.rpm

# rpmlint's errors fail the build; its warnings are explained in packaging/README.md. Then rpm runs
# the scriptlets in a scratch root (as root).
rpm-check: rpm
	rpmlint -c packaging/rpm/rpmlint.toml -r packaging/rpm/nm-vpn-netns.rpmlintrc packaging/rpm/nm-vpn-netns.spec $(RPM_TOPDIR)/RPMS/x86_64/*.rpm
	bash tests/rpm-scriptlets.sh

# Booted Debian 12 and 13 under qemu, systemd as PID 1 (tests/vm/README.md): install, the agent's
# hardened unit, a local user with a logind session, an upgrade with a VPN up, a killed agent, purge.
# The upgrade goes from this tree packaged as a lower version (~vm) to this tree as `make deb`
# packages it. About 13 minutes, 17 with the root filesystems to build.
VM_DEB_B = $(shell awk 'NR == 1 {gsub(/[()]/, "", $$2); print $$2}' packaging/debian/changelog)
VM_DEB_A = $(VM_DEB_B)~vm
vm:
	bash tests/vm/deps.sh
	$(MAKE) -s deb DEB_VERSION=$(VM_DEB_A)
	mkdir -p target/vm && mv target/debian/nm-vpn-netns_$(VM_DEB_A)_amd64.deb target/vm/
	$(MAKE) -s deb DEB_VERSION=$(VM_DEB_B)
	bash tests/vm/run.sh target/vm/nm-vpn-netns_$(VM_DEB_A)_amd64.deb target/debian/nm-vpn-netns_$(VM_DEB_B)_amd64.deb

# Installs what `make build` produced; it does not build, so that it can run as root in a tree
# built by a normal user (or inside the e2e rig's sandbox).
install: $(if $(DESTDIR),,no-package)
	@for b in nm-vpn-netns nm-vpn-netns-agent nm-vpn-netns-service; do \
	    test -x $(BIN_DIR)/$$b || { echo "install: $(BIN_DIR)/$$b is missing; run 'make build' first" >&2; exit 1; }; done
	install -D -m 755 $(BIN_DIR)/nm-vpn-netns $(DESTDIR)$(BINDIR)/nm-vpn-netns
	install -D -m 755 $(BIN_DIR)/nm-vpn-netns-agent $(DESTDIR)$(LIBEXECDIR)/nm-vpn-netns-agent
	install -D -m 755 $(BIN_DIR)/nm-vpn-netns-service $(DESTDIR)$(NMLIBDIR)/nm-vpn-netns-service
	install -D -m 644 nm-plugin/$(AGENT_NAME).conf $(DESTDIR)$(DBUSDIR)/system.d/$(AGENT_NAME).conf
	install -d $(DESTDIR)$(DBUSDIR)/system-services $(DESTDIR)$(UNITDIR)
	sed 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' nm-plugin/$(AGENT_NAME).service.in >$(DESTDIR)$(DBUSDIR)/system-services/$(AGENT_NAME).service
	sed 's|@LIBEXECDIR@|$(LIBEXECDIR)|g' nm-plugin/nm-vpn-netns-agent.service.in >$(DESTDIR)$(UNITDIR)/nm-vpn-netns-agent.service
	install -d $(DESTDIR)$(POLKITDIR)
	sed 's|@BINDIR@|$(BINDIR)|g' nm-plugin/$(EXEC_ACTION).policy.in >$(DESTDIR)$(POLKITDIR)/$(EXEC_ACTION).policy
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
	$(if $(DESTDIR),,$(TAKEOVER) nm_vpn_netns_for_each nm_vpn_netns_take_over)
	$(if $(DESTDIR),,$(TAKEOVER) nm_vpn_netns_reload_bus)

# The takeover of the stock .name files of each plugin that is installed, shared with the package's
# maintainer scripts: a local dpkg diversion, first, so that NetworkManager never sees two files for
# one service and package upgrades of the stock plugin land on the diverted path too. With a DESTDIR
# there is no stock file to generate ours from, and none is written: a package's scripts take over
# at install time (see packaging/README.md).
TAKEOVER = NM_VPN_NETNS_DIVERT_OWNER=--local NM_VPN_NETNS_VPN_DIR=$(NMVPNDIR) \
	NM_VPN_NETNS_SHIM=$(NMLIBDIR)/nm-vpn-netns-service sh -ec '. packaging/takeover.sh; "$$@"' takeover

# The package and make install would fight over the same files: with the package installed, use it.
no-package:
	@status=$$(dpkg-query -W -f='$${Status}' nm-vpn-netns 2>/dev/null) || true; \
	    case "$$status" in *"ok installed") echo "the nm-vpn-netns package is installed; remove it before 'make $(MAKECMDGOALS)'" >&2; exit 1;; esac

uninstall: $(if $(DESTDIR),,no-package)
	rm -f $(DESTDIR)$(BINDIR)/nm-vpn-netns $(DESTDIR)$(LIBEXECDIR)/nm-vpn-netns-agent \
	    $(DESTDIR)$(NMLIBDIR)/nm-vpn-netns-service $(DESTDIR)$(DBUSDIR)/system.d/$(AGENT_NAME).conf \
	    $(DESTDIR)$(DBUSDIR)/system-services/$(AGENT_NAME).service $(DESTDIR)$(UNITDIR)/nm-vpn-netns-agent.service \
	    $(DESTDIR)$(POLKITDIR)/$(EXEC_ACTION).policy
	rm -f $(DESTDIR)$(MANDIR)/man5/nm-vpn-netns.5.gz $(DESTDIR)$(MANDIR)/man8/nm-vpn-netns.8.gz \
	    $(DESTDIR)$(MANDIR)/man8/nm-vpn-netns-*.8.gz $(DESTDIR)$(BASHCOMPDIR)/nm-vpn-netns \
	    $(DESTDIR)$(ZSHCOMPDIR)/_nm-vpn-netns $(DESTDIR)$(FISHCOMPDIR)/nm-vpn-netns.fish
	$(if $(DESTDIR),,$(TAKEOVER) nm_vpn_netns_for_each nm_vpn_netns_undivert)
	$(if $(DESTDIR),,$(TAKEOVER) nm_vpn_netns_reload_bus)

clean:
	$(CARGO) clean
