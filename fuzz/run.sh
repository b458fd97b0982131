#!/usr/bin/env bash
# Run every fuzz target for a bounded time from the committed seeds; fails on the first crash (or any other
# failure of the fuzzer), leaving the input under fuzz/artifacts/<target>/ (add it to fuzz/corpus/<target>/
# and a regression test once fixed).
#
#   fuzz/run.sh                 # each target for FUZZ_SECONDS (default 20)
#   FUZZ_SECONDS=600 fuzz/run.sh ldap_request     # one target, longer
#
# Needs cargo-fuzz (`cargo install cargo-fuzz --locked`). Builds without a sanitizer (`-s none`): the code is
# safe Rust, and what is looked for is panics, overflows (debug assertions are on) and hangs; that also works
# on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  mapfile -t targets < <(cargo fuzz list --fuzz-dir fuzz)
fi
cargo fuzz build -s none --fuzz-dir fuzz
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  echo "== fuzz $t for ${seconds}s"
  # New inputs go to a scratch corpus, not into the committed seeds; a crash's input is copied out below.
  mkdir -p "$work/$t" "$work/artifacts/$t"
  if ! cargo fuzz run -s none --fuzz-dir fuzz "$t" "$work/$t" fuzz/corpus/"$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 \
    -artifact_prefix="$work/artifacts/$t/" >"$work/$t.log" 2>&1; then
    tail -40 "$work/$t.log" >&2
    mkdir -p fuzz/artifacts/"$t"
    cp "$work/artifacts/$t/"* fuzz/artifacts/"$t"/ 2>/dev/null || true
    echo "fuzz target $t failed; its input (if any) is in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "^#[0-9]+.*DONE" "$work/$t.log" || true
done
