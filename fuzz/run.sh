#!/bin/sh
# Runs fuzz targets one after another, each for SECONDS (default 180), and
# prints libFuzzer's last status line (execs, cov, ft, corp) per target.
# Usage: fuzz/run.sh [SECONDS] [TARGET...]   (all targets when none given)
# Stable Rust: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its nightly-only
# flags; `-s none` skips AddressSanitizer (the crates forbid unsafe code,
# so what is hunted is panics: overflow, bounds, asserts, hangs, OOM).
set -u
cd "$(dirname "$0")"
seconds=${1:-180}
[ $# -gt 0 ] && shift
targets=${*:-$(cargo fuzz list)}
mkdir -p logs
# The queue target writes its files under TMPDIR: a tmpfs is faster.
export TMPDIR=${TMPDIR:-/dev/shm}
export RUSTC_BOOTSTRAP=1
for t in $targets; do
    mkdir -p "corpus/$t"
    cargo fuzz run -s none "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -timeout=10 -print_final_stats=1 \
        >"logs/$t.log" 2>&1
    status=$?
    last=$(grep -E '^#[0-9]+' "logs/$t.log" | tail -n 1)
    crash=$(grep -E 'Test unit written to' "logs/$t.log" | sed 's/.*written to //')
    echo "$t exit=$status ${last} ${crash:+CRASH $crash}"
done
