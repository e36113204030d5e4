# Entry points for people and CI. `make demo` and `make test` are the two commands README.md
# promises work on a fresh machine; both install what they need themselves.
SHELL := bash
.SHELLFLAGS := -eu -o pipefail -c

# Builds and downloads are cached outside the repo, so a fresh clone starts warm.
export SESSIONIZER_CACHE ?= $(HOME)/.cache/sessionizer
export CARGO_TARGET_DIR ?= $(SESSIONIZER_CACHE)/target
export SESSIONIZER_BIN_DIR ?= $(CARGO_TARGET_DIR)/debug

.PHONY: deps tools build lint test demo env clean-cache help

help: ## List the targets.
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed 's/:.*## /\t/'

deps: ## Check the machine; install missing Debian build packages when root.
	e2e/toolchain/system-deps.sh

tools: deps ## Build the real servers (Kubernetes, etcd, helm, MinIO, Kafka) and promtool once, into the cache.
	e2e/toolchain/build.sh

build: ## Build every binary of the workspace.
	cargo build --workspace --bins

lint: tools ## Formatting, clippy (warnings are errors) and the Helm chart (charts/check.sh).
	cargo fmt --all --check
	cargo clippy --workspace --all-targets -- -D warnings
	charts/check.sh

test: tools lint build ## Everything CI runs: lint, unit tests and end-to-end tests.
	cargo test --workspace --no-fail-fast

demo: tools build ## Bring the local environment up and show it working; Ctrl-C tears it down.
	$(CARGO_TARGET_DIR)/debug/sessionizer-env demo

env: tools build ## Bring the local environment up and keep it running until Ctrl-C.
	$(CARGO_TARGET_DIR)/debug/sessionizer-env up

clean-cache: ## Remove every cached build and download.
	rm -rf $(SESSIONIZER_CACHE)
