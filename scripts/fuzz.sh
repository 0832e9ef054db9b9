#!/usr/bin/env bash
# Every fuzz target for a bounded time. With a nightly toolchain: cargo-fuzz (installed under
# $HOME/.cache/cargo-tools on first use), each target for FUZZ_SECONDS (default 20) from the
# committed corpus (fuzz/corpus/<target>, read-only; new inputs go to a scratch directory); a
# crash fails the run and leaves its input in fuzz/artifacts/<target>/. Without nightly: the
# committed corpora and their seeded mutations are replayed on stable (the doin-fuzzing tests),
# and the script says so. Never silently nothing.
# Usage: scripts/fuzz.sh [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${FUZZ_SECONDS:-20}"
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: no nightly toolchain; replaying the committed corpora on stable instead"
  cargo test -p doin-fuzzing
  exit 0
fi
tools="$HOME/.cache/cargo-tools"
[ -x "$tools/bin/cargo-fuzz" ] || cargo install cargo-fuzz --locked --root "$tools"
export PATH="$tools/bin:$PATH"
cd fuzz
targets=("$@")
[ ${#targets[@]} -gt 0 ] || mapfile -t targets < <(cargo +nightly fuzz list)
if [ ${#targets[@]} -eq 0 ]; then
  echo "fuzz: no targets (cargo fuzz list failed?)" >&2
  exit 1
fi
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT
for t in "${targets[@]}"; do
  mkdir -p "$scratch/$t" "artifacts/$t"
  echo "fuzz: $t for ${seconds} s"
  rc=0
  cargo +nightly fuzz run --sanitizer none --target-dir "$HOME/.cache/doin-fuzz-target" "$t" \
    "$scratch/$t" "corpus/$t" -- -max_total_time="$seconds" -rss_limit_mb=2048 \
    -artifact_prefix="artifacts/$t/" -print_final_stats=1 > "$scratch/$t.log" 2>&1 || rc=$?
  grep -E "^(Done|stat::number_of_executed_units|stat::peak_rss_mb)" "$scratch/$t.log" || true
  if [ "$rc" -ne 0 ]; then
    tail -60 "$scratch/$t.log"
    echo "fuzz: $t FAILED (exit $rc); the input is in fuzz/artifacts/$t/"
    exit "$rc"
  fi
done
