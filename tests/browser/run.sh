#!/bin/sh
# Runs the browser test of the page at "/" (test.mjs): installs Debian's chromium, nodejs and
# npm when missing (Debian 12's nodejs is 18: playwright-core is pinned to a version whose
# `engines` accept it), then the npm dependencies (package-lock.json) when missing or not the
# pinned version, builds the server when needed, then runs the test. Exit status is the test's.
#   tests/browser/run.sh                 # uses build/resattn
#   RESATTN_BIN=build-x/resattn tests/browser/run.sh
set -eu
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
if [ ! -x /usr/bin/chromium ]; then
    echo "installing chromium" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
if ! command -v npm >/dev/null 2>&1; then
    echo "installing nodejs and npm" >&2
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi
want=$(sed -n 's/.*"playwright-core": "\([^"]*\)".*/\1/p' "$here/package.json")
have=$(cd "$here" && node -p 'require("./node_modules/playwright-core/package.json").version' 2>/dev/null || true)
if [ "$have" != "$want" ]; then
    (cd "$here" && npm ci --no-audit --no-fund --loglevel=error)
fi
bin="${RESATTN_BIN:-build/resattn}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
if [ ! -x "$bin" ] && [ -z "${RESATTN_BIN:-}" ]; then
    make -C "$root" all
fi
echo "browser test: node $(node --version), playwright-core $want, $(/usr/bin/chromium --version 2>/dev/null)" >&2
RESATTN_BIN="$bin" exec node "$here/test.mjs"
