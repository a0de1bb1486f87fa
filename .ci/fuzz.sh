#!/usr/bin/env bash
# Fuzz smoke runs: every cargo-fuzz target for FUZZ_SECONDS each, built with AddressSanitizer
# (cargo fuzz's default on nightly). Fails on any crash; skipped, saying so, without nightly.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${FUZZ_SECONDS:-30}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    echo "no nightly toolchain: fuzz smoke runs skipped (the corpus replay in cargo test still ran)"
    exit 0
fi
export PATH="$HOME/.cargo/bin:$PATH"
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
work="$(mktemp -d)"
for target in $(cargo +nightly fuzz list); do
    mkdir -p "$work/$target"
    echo "-- $target (${seconds}s, AddressSanitizer)"
    # New inputs go to a scratch corpus; the committed seeds are read-only inputs.
    if ! cargo +nightly fuzz run "$target" "$work/$target" "corpus/$target" -- \
        -max_total_time="$seconds" -rss_limit_mb=4096 -print_final_stats=1 >"$work/$target.log" 2>&1; then
        tail -60 "$work/$target.log"
        echo "fuzz target $target failed; reproducer under fuzz/artifacts/$target"
        exit 1
    fi
    grep -E 'stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb' "$work/$target.log" | sed 's/^/   /'
done
