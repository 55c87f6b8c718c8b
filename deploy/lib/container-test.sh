# shellcheck shell=bash
# Shared harness of the podman end-to-end tests (deploy/smoke-test.sh, deploy/memory-test.sh),
# sourced after `cd` to the repository root with SUITE set to the name printed in the last
# line ("$SUITE: N passed, N failed"). Provides $TMP (removed on exit), the `started` array of
# containers to remove on exit, the counters and summary lines, ok/fail/check/finish,
# ensure_base_image and free_port.
TMP=$(mktemp -d)
started=()
cleanup() {
  for c in "${started[@]}"; do podman rm -f -t 0 "$c" >/dev/null 2>&1; done
  rm -rf "$TMP"
}
trap cleanup EXIT

passed=0
failed=0
summary=()
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
check() { # check NAME CMD...: pass when CMD exits 0
  local name=$1
  shift
  if "$@" >"$TMP/out" 2>&1; then ok "$name"; else fail "$name"; sed 's/^/    /' "$TMP/out" | tail -n 20; fi
}
finish() {
  echo
  echo "== summary"
  for s in "${summary[@]}"; do echo "  $s"; done
  echo "$SUITE: $passed passed, $failed failed"
  [ "$failed" -eq 0 ]
  exit
}

# The base-image script also installs podman, buildah, runc and debootstrap when missing.
ensure_base_image() {
  if ! command -v podman >/dev/null || ! podman image exists docker.io/library/debian:bookworm-slim; then
    local base=../shared/tools/local-base-image.sh
    [ -f "$base" ] || base=/work/shared/tools/local-base-image.sh
    echo "== base image missing: running $base"
    bash "$base" || { fail "local base image ($base)"; finish; }
  fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
