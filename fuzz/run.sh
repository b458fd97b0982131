#!/usr/bin/env bash
# Run every fuzz target for a bounded time from the committed seeds; fails on the first crash, leaving the
# input under fuzz/artifacts/<target>/ (add it to fuzz/corpus/<target>/ and a regression test once fixed).
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
  # New inputs go to a scratch corpus, not into the committed seeds.
  mkdir -p "$work/$t"
  cargo fuzz run -s none --fuzz-dir fuzz "$t" "$work/$t" fuzz/corpus/"$t" -- \
    -max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -print_final_stats=1 2>&1 | grep -E "^(==|INFO: seed|stat::number_of_executed_units|#.*DONE|SUMMARY|.*panicked|thread)" || true
  # cargo fuzz exits non-zero on a crash, but the pipe above hides it: look for the artifact instead.
  if compgen -G "fuzz/artifacts/$t/*" >/dev/null; then
    echo "fuzz target $t found a crash: $(ls fuzz/artifacts/"$t")" >&2
    exit 1
  fi
done
