# nm-vpn-netns: build, test, demo and install.
#
#   make demo       install what is missing, build, and show an isolated VPN on the built-in rig
#   make check      the whole test suite (what CI runs)
#   make install    install into $(DESTDIR)$(PREFIX) (run as root; see README)

PREFIX ?= /usr
DESTDIR ?=
CARGO ?= cargo
PROFILE ?= release

BIN_DIR = target/$(PROFILE)
CARGO_PROFILE_FLAG = $(if $(filter release,$(PROFILE)),--release,--profile $(PROFILE))

.PHONY: all build deps demo check lint unit privileged e2e install uninstall clean

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

unit:
	$(CARGO) test --locked

e2e: build
	bash tests/e2e/run.sh

check: deps lint unit e2e

clean:
	$(CARGO) clean
