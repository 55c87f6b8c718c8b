#!/usr/bin/env bash
# Offline validation of everything under deploy/ plus the Dockerfile, without a container
# engine or a cluster (about 10 s once the npm packages are cached):
#   - Dockerfile: builds on debian:bookworm-slim, final stage FROM scratch with only the root
#     that deploy/image-root.sh assembled (no RUN: there is no shell), USER 10001:10001,
#     HEALTHCHECK running `resattn healthcheck` (exec form), EXPOSE, exec-form ENTRYPOINT
#     running `resattn serve`; nothing refers to the removed healthcheck.sh; shell scripts
#     parse (bash -n).
#   - Prometheus config and alert rules: promtool check config / rules, and the rules' unit
#     tests (promtool test rules deploy/prometheus/rules.test.yml).
#   - Compose: `docker-compose config` (Debian's docker-compose), then validate-compose.mjs
#     (wiring, hardening, dashboard panels) and promtool on the dashboard's PromQL.
#   - Load balancer (deploy/scale): `docker-compose config`, `haproxy -c`, and validate-scale.mjs
#     (HAProxy's checks, retries and timeouts against the replicas' drain settings).
#   - KServe (deploy/kserve): validate-kserve.mjs, the ServingRuntime and InferenceService
#     against a hand-written subset of KServe v0.14's CRDs (unknown fields rejected) and the
#     properties the two promise together.
#   - Kubernetes: `kubectl kustomize` of deploy/k8s, custom-model and model-repository when kubectl
#     is installed, and validate-k8s.mjs (kubernetes-models schemas + deployment properties,
#     including the termination arithmetic of deploy/README.md).
#   - Every RESATTN_* variable the deploy files set is an option the server knows (read from
#     `resattn serve --help` when a binary is built, else from server/*/*.c).
# Installs docker-compose, prometheus (promtool), haproxy, nodejs/npm from Debian when missing (as root),
# and the pinned npm packages of tests/deploy (npm ci). Prints "validate: N passed, N failed".
set -uo pipefail
cd "$(dirname "$0")/.." || exit 2
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

passed=0
failed=0
ok() { passed=$((passed + 1)); echo "ok   $*"; }
fail() { failed=$((failed + 1)); echo "FAIL $*"; }
# run NAME CMD...: one check = one command's exit status; output shown only on failure.
run() {
  local name=$1
  shift
  if "$@" >"$TMP/out" 2>&1; then ok "$name"; else fail "$name"; sed 's/^/    /' "$TMP/out" | tail -n 30; fi
}
# sub NAME CMD...: a command that prints its own ok/FAIL lines and "N passed, N failed".
sub() {
  local name=$1
  shift
  "$@" >"$TMP/sub" 2>&1
  local rc=$?
  grep -v '^ok ' "$TMP/sub" | sed 's/^/    /'
  local p f
  p=$(grep -c '^ok ' "$TMP/sub")
  f=$(grep -c '^FAIL' "$TMP/sub")
  passed=$((passed + p))
  failed=$((failed + f))
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then fail "$name exited $rc"; else echo "--   $name: $p passed, $f failed"; fi
}

need_pkg() { # need_pkg COMMAND DEBIAN_PACKAGE
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "$(id -u)" -eq 0 ]; then
    echo "installing $2 (for $1)" >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2"; } >/dev/null 2>&1
  fi
  command -v "$1" >/dev/null 2>&1
}

echo "== Dockerfile and scripts"
df=Dockerfile
# The final stage: every line from the last FROM on.
fs=$TMP/final-stage
awk '/^FROM /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' $df >"$fs"
run "Dockerfile: build stage from debian:bookworm-slim, final stage FROM scratch" \
  bash -c "grep -qxF 'FROM \${DEBIAN_IMAGE} AS build' $df && grep -qx 'ARG DEBIAN_IMAGE=debian:bookworm-slim' $df &&
    head -n1 $fs | grep -qx 'FROM scratch'"
run "Dockerfile: the final stage copies only the root image-root.sh assembles, runs nothing" \
  bash -c "[ \$(grep -cE '^(COPY|ADD) ' $fs) = 1 ] && grep -qx 'COPY --from=build /image-root/ /' $fs &&
    ! grep -qE '^RUN ' $fs && grep -q 'deploy/image-root.sh /out/resattn /image-root' $df"
run "Dockerfile: final USER is 10001:10001" bash -c "grep -E '^USER ' $fs | tail -n1 | grep -qx 'USER 10001:10001'"
run "Dockerfile: HEALTHCHECK runs resattn healthcheck (exec form), EXPOSE 8080, STOPSIGNAL SIGTERM, ENTRYPOINT resattn serve" \
  bash -c "grep -q '^HEALTHCHECK ' $fs && grep -qF 'CMD [\"/usr/local/bin/resattn\", \"healthcheck\"]' $fs &&
    grep -q '^EXPOSE 8080' $fs && grep -qx 'STOPSIGNAL SIGTERM' $fs &&
    grep -qxF 'ENTRYPOINT [\"/usr/local/bin/resattn\", \"serve\"]' $fs"
run "Dockerfile: gRPC on 8001 (RESATTN_GRPC_PORT=8001, EXPOSE 8080 8001); compose publishes it; the k8s Service routes port grpc" \
  bash -c "grep -q 'RESATTN_GRPC_PORT=8001' $fs && grep -qx 'EXPOSE 8080 8001' $fs &&
    grep -qF ':8001\"' deploy/docker-compose.yml && grep -qx '      targetPort: grpc' deploy/k8s/base/service.yaml &&
    grep -qx '              containerPort: 8001' deploy/k8s/base/deployment.yaml"
run "nothing refers to the removed deploy/healthcheck.sh" \
  bash -c "! grep -rn 'healthcheck\.sh\|resattn-healthcheck' $df .dockerignore deploy tests/deploy --include='*' --exclude-dir=node_modules --exclude=validate.sh"
run ".dockerignore lets deploy/image-root.sh into the build context" grep -qx '!deploy/image-root.sh' .dockerignore
run "Dockerfile: OPENBLAS_CORETYPE set in the image" grep -q 'OPENBLAS_CORETYPE=\${OPENBLAS_CORETYPE}' $df
run ".dockerignore keeps build trees and .git out" bash -c "grep -qx '.git' .dockerignore && grep -qx 'build-\*' .dockerignore"
for s in deploy/*.sh deploy/lib/*.sh; do run "bash -n $s" bash -n "$s"; done

echo "== Prometheus"
if need_pkg promtool prometheus; then
  run "promtool check config deploy/prometheus/prometheus.yml" promtool check config deploy/prometheus/prometheus.yml
  run "promtool check rules deploy/prometheus/rules.yml" promtool check rules deploy/prometheus/rules.yml
  run "promtool test rules deploy/prometheus/rules.test.yml (alerts on the model/endpoint labels)" \
    promtool test rules deploy/prometheus/rules.test.yml
else
  fail "promtool not available (install Debian's prometheus)"
fi

echo "== npm validators"
if need_pkg node nodejs && need_pkg npm npm; then
  if [ ! -d tests/deploy/node_modules ] || [ tests/deploy/package-lock.json -nt tests/deploy/node_modules ]; then
    run "npm ci (tests/deploy)" npm ci --prefix tests/deploy --prefer-offline --no-audit --no-fund
    touch tests/deploy/node_modules 2>/dev/null || true
  fi
  HAVE_NODE=1
else
  fail "node/npm not available"
  HAVE_NODE=0
fi

echo "== Compose"
if need_pkg docker-compose docker-compose; then
  (cd deploy && docker-compose -f docker-compose.yml config) >"$TMP/compose.yaml" 2>"$TMP/compose.err" &&
    ok "docker-compose config (deploy/docker-compose.yml)" ||
    { fail "docker-compose config"; cat "$TMP/compose.err"; }
  run "docker-compose config (with compose.local.yml)" \
    bash -c "cd deploy && docker-compose -f docker-compose.yml -f compose.local.yml config -q"
  if [ "$HAVE_NODE" = 1 ] && [ -s "$TMP/compose.yaml" ]; then
    sub "validate-compose.mjs" node tests/deploy/validate-compose.mjs deploy "$TMP/compose.yaml" \
      "$TMP/dashboard-rules.json" "$TMP/dashboard-metrics.txt"
    command -v promtool >/dev/null &&
      run "promtool check rules <dashboard PromQL>" promtool check rules "$TMP/dashboard-rules.json"
  fi
else
  fail "docker-compose not available"
fi

echo "== Load balancer (deploy/scale)"
if command -v docker-compose >/dev/null 2>&1; then
  (cd deploy/scale && docker-compose -f compose.yml config) >"$TMP/scale.yaml" 2>"$TMP/scale.err" &&
    ok "docker-compose config (deploy/scale/compose.yml)" ||
    { fail "docker-compose config (deploy/scale)"; cat "$TMP/scale.err"; }
  [ "$HAVE_NODE" = 1 ] && [ -s "$TMP/scale.yaml" ] &&
    sub "validate-scale.mjs" node tests/deploy/validate-scale.mjs "$TMP/scale.yaml" deploy/scale/haproxy.cfg
fi
if need_pkg haproxy haproxy; then
  # the replicas' names resolve only inside the compose network: unresolved servers are
  # warnings (init-addr none), anything else is an error
  run "haproxy -c -f deploy/scale/haproxy.cfg" haproxy -c -f deploy/scale/haproxy.cfg
else
  echo "note haproxy not installed: deploy/scale/haproxy.cfg syntax not checked (its relations are)"
fi

echo "== KServe (deploy/kserve, against a KServe v0.14 CRD subset)"
[ "$HAVE_NODE" = 1 ] && sub "validate-kserve.mjs" node tests/deploy/validate-kserve.mjs deploy/kserve

echo "== Kubernetes"
rendered=()
if command -v kubectl >/dev/null 2>&1; then
  for entry in deploy/k8s deploy/k8s/custom-model deploy/k8s/model-repository; do
    name=$(basename "$entry")
    [ "$name" = k8s ] && name=base
    if kubectl kustomize "$entry" >"$TMP/k8s-$name.yaml" 2>"$TMP/k8s.err"; then
      ok "kubectl kustomize $entry"
      rendered+=("$name=$TMP/k8s-$name.yaml")
    else
      fail "kubectl kustomize $entry"
      sed 's/^/    /' "$TMP/k8s.err"
    fi
  done
else
  echo "note kubectl not installed: kustomize rendering not checked (raw manifests still are)"
fi
[ "$HAVE_NODE" = 1 ] && sub "validate-k8s.mjs" node tests/deploy/validate-k8s.mjs deploy/k8s "${rendered[@]}"

echo "== RESATTN_* options used by the deploy files"
bin=${RESATTN_BIN:-}
[ -z "$bin" ] && for b in build/resattn build-deploy/resattn; do [ -x "$b" ] && bin=$b && break; done
if [ -n "$bin" ] && "$bin" serve --help >"$TMP/known" 2>&1; then
  src="\`$bin serve --help\`"
elif ls server/cli/config.c >/dev/null 2>&1; then
  cat server/*/*.c >"$TMP/known"
  src="server/*/*.c"
else
  src=""
fi
{
  grep -ohE 'name: RESATTN_[A-Z0-9_]+' deploy/k8s deploy/kserve -r | sed 's/name: //'
  grep -ohE '^ +RESATTN_[A-Z0-9_]+:' "$TMP/compose.yaml" "$TMP/scale.yaml" 2>/dev/null | tr -d ' :'
  grep -oE 'RESATTN_[A-Z0-9_]+=' Dockerfile | tr -d '='
} | sort -u >"$TMP/used"
if [ -z "$src" ]; then
  echo "note no server binary or server/cli/config.c yet: $(wc -l <"$TMP/used") variables not cross-checked"
else
  while read -r v; do
    run "$v is a server option ($src)" grep -qw "$v" "$TMP/known"
  done <"$TMP/used"
fi

echo "validate: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
