#!/usr/bin/env bash
# make test-loom: the loom models of the shared-memory logic (release build,
# bounded preemptions, separate target directory so that the cfg(loom) build
# does not evict the normal one; without the default feature `etcd`, whose
# tokio does not build under cfg(loom)), then a check that every model ran: the
# models are selected by name (modules loom_models*), so a renamed module or
# a model left out of the build would otherwise pass unseen with fewer, or
# none. The count expected is that of the #[test] functions in
# src/**/loom_models*.rs.
set -euo pipefail
cargo=${CARGO:-cargo}
mapfile -t files < <(find src -name 'loom_models*.rs' | sort)
[ ${#files[@]} -gt 0 ] || { echo "test-loom: no src/**/loom_models*.rs files" >&2; exit 1; }
want=$(cat "${files[@]}" | grep -c '^[[:space:]]*#\[test\]' || true)
out=$(mktemp)
trap 'rm -f "$out"' EXIT
RUSTFLAGS="--cfg loom" LOOM_MAX_PREEMPTIONS=3 \
  "$cargo" test -p mtipc --no-default-features --release --lib --target-dir target/loom -- loom_models 2>&1 | tee "$out"
ran=$(sed -n 's/^test result: ok\. \([0-9][0-9]*\) passed.*/\1/p' "$out" | tail -n 1)
if [ "$ran" != "$want" ]; then
  echo "test-loom: ${ran:-no} models ran, but ${files[*]} define $want" >&2
  exit 1
fi
echo "== test-loom: all $want models ran and passed"
