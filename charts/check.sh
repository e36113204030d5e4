#!/usr/bin/env bash
# Checks the Helm chart; `make lint` runs it. Offline by default:
#   - the chart's CRDs are exactly what the generator writes to crds/generated/;
#   - `helm lint --strict` passes for the default values and for a watchNamespaces variant;
#   - `helm template` renders every variant, each with the objects it should have;
#   - values.schema.json rejects misspelt keys and wrong types, and the templates refuse
#     replicas > 1 without leader election;
#   - the PrometheusRule's rules pass `promtool check rules` and the unit tests in
#     charts/tests/prometheusrule.test.yaml (`promtool test rules`), the Grafana dashboard is valid
#     JSON, and every metric the rules and the dashboard query is one the operator or the worker
#     registers (promtool is the pinned build from e2e/toolchain, `make tools`).
# With --server it also validates the rendered manifests and examples/*.yaml against the cluster
# of $KUBECONFIG (`kubectl apply --dry-run=server --validate=strict`). That mode installs the CRDs
# for real (server-side apply; they are never deleted) and creates and deletes three namespaces
# named sessionizer-check*, so point it at a disposable cluster such as `sessionizer-env up`.
#
# helm and kubectl are the pinned builds in $SESSIONIZER_CACHE/tools/ (default
# ~/.cache/sessionizer), versions from e2e/toolchain/versions.env; `make tools` builds them.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
chart="$root/charts/sessionizer-operator"
server=false
case "${1:-}" in
  "") ;;
  --server) server=true ;;
  *) echo "usage: $0 [--server]" >&2; exit 2 ;;
esac

version() {
  local value
  value="$(grep -E "^$1=" "$root/e2e/toolchain/versions.env" | head -n1 | cut -d= -f2- | tr -d '[:space:]')"
  [[ -n "$value" ]] || { echo "check.sh: $1 is missing from e2e/toolchain/versions.env" >&2; exit 1; }
  printf '%s' "$value"
}
k8s_version="$(version K8S_VERSION)"
tools="${SESSIONIZER_CACHE:-$HOME/.cache/sessionizer}/tools"
helm="$tools/helm-$(version HELM_VERSION)/bin/helm"
kubectl="$tools/k8s-$k8s_version/bin/kubectl"
promtool="$tools/promtool-$(version PROMTOOL_VERSION)/bin/promtool"
for tool in "$helm" "$kubectl" "$promtool"; do
  [[ -x "$tool" ]] || { echo "check.sh: $tool is missing; run 'make tools'" >&2; exit 1; }
done

# Keep helm away from the user's own configuration and repositories.
scratch="$(mktemp -d)"
namespaces=()
cleanup() {
  if ((${#namespaces[@]})); then
    "$kubectl" delete namespace "${namespaces[@]}" --ignore-not-found --wait=false >/dev/null || true
  fi
  rm -rf "$scratch"
}
trap cleanup EXIT
export HELM_CACHE_HOME="$scratch/cache" HELM_CONFIG_HOME="$scratch/config" HELM_DATA_HOME="$scratch/data"

failures=0
pass() { echo "ok   $*"; }
fail() { echo "FAIL $*" >&2; failures=$((failures + 1)); }

# --- CRDs: the chart ships exactly what the generator writes -------------------------------------
if diff -r "$root/crds/generated" "$chart/crds" >"$scratch/crd.diff"; then
  pass "chart CRDs are identical to crds/generated"
else
  cat "$scratch/crd.diff" >&2
  fail "charts/sessionizer-operator/crds differs from crds/generated: never edit either by hand;" \
    "run 'cargo run -p sessionizer-crds --bin sessionizer-crdgen' and commit both"
fi

# --- lint and render ------------------------------------------------------------------------------
release=sessionizer
namespace=sessionizer-system
# name|helm value flags (split on spaces)
variants=(
  "default|"
  "watch-namespaces|--set watchNamespaces={team-a,team-b}"
  "service-monitor|--set serviceMonitor.enabled=true --set serviceMonitor.labels.release=prometheus"
  "single-replica|--set replicas=1 --set leaderElection.enabled=false"
  "monitoring|--set monitoring.prometheusRule.enabled=true --set monitoring.grafanaDashboard.enabled=true"
)

render() { # variant flags... -> rendered YAML on stdout
  "$helm" template "$release" "$chart" --namespace "$namespace" --kube-version "$k8s_version" "$@"
}

count() { # file kind -> number of objects of that kind
  grep -c "^kind: $2\$" "$1" || true
}

expect() { # variant file kind n
  local got
  got="$(count "$2" "$3")"
  if [[ "$got" == "$4" ]]; then pass "$1: $4 × $3"; else fail "$1: expected $4 × $3, rendered $got"; fi
}

for variant in "${variants[@]}"; do
  name="${variant%%|*}"
  read -r -a flags <<<"${variant#*|}"
  if "$helm" lint --strict "$chart" --namespace "$namespace" --kube-version "$k8s_version" \
    "${flags[@]}" >"$scratch/lint.log" 2>&1; then
    pass "$name: helm lint --strict"
  else
    cat "$scratch/lint.log" >&2
    fail "$name: helm lint --strict"
  fi
  out="$scratch/$name.yaml"
  if render "${flags[@]}" >"$out" 2>"$scratch/render.log"; then
    pass "$name: helm template renders ($(grep -c '^kind: ' "$out") objects)"
  else
    cat "$scratch/render.log" >&2
    fail "$name: helm template"
    continue
  fi
  case "$name" in
    default)
      expect "$name" "$out" Deployment 1
      expect "$name" "$out" ServiceAccount 1
      expect "$name" "$out" ClusterRole 1
      expect "$name" "$out" ClusterRoleBinding 1
      expect "$name" "$out" Role 1 # the Lease Role
      expect "$name" "$out" Service 1
      expect "$name" "$out" PodDisruptionBudget 1
      expect "$name" "$out" ServiceMonitor 0
      expect "$name" "$out" PrometheusRule 0
      expect "$name" "$out" ConfigMap 0
      ;;
    monitoring)
      expect "$name" "$out" PrometheusRule 1
      expect "$name" "$out" ConfigMap 1
      ;;
    watch-namespaces)
      expect "$name" "$out" ClusterRole 0
      expect "$name" "$out" ClusterRoleBinding 0
      expect "$name" "$out" Role 3 # team-a, team-b and the Lease Role
      expect "$name" "$out" RoleBinding 3
      grep -q 'value: "team-a,team-b"' "$out" && pass "$name: operator watches team-a,team-b" ||
        fail "$name: SESSIONIZER_WATCH_NAMESPACES is not team-a,team-b"
      ;;
    service-monitor)
      expect "$name" "$out" ServiceMonitor 1
      ;;
    single-replica)
      expect "$name" "$out" PodDisruptionBudget 0
      expect "$name" "$out" Role 0
      grep -q 'value: "false"' "$out" && pass "$name: LEADER_ELECTION=false" ||
        fail "$name: LEADER_ELECTION is not false"
      ;;
  esac
done

# --- alert rules and dashboard ---------------------------------------------------------------------
# The metrics the operator and the worker register (counters are exposed with _total, histograms
# with _bucket/_sum/_count).
known="$scratch/metrics.txt"
{
  grep -rhoE '"sessionizer_[a-z0-9_]+"' "$root/worker/src" | tr -d '"'
  grep -rh -A1 'register($' "$root/operator/src" | grep -oE '^\s*"[a-z0-9_]+",' | tr -d ' ",' |
    sed 's/^/sessionizer_operator_/'
} | sort -u >"$known"
unknown_metrics() { # file -> names it queries that nothing registers
  grep -oE 'sessionizer_[a-z0-9_]+' "$1" | sort -u | while read -r metric; do
    base="$(sed -E 's/_(total|bucket|sum|count)$//' <<<"$metric")"
    grep -qxF -e "$metric" -e "$base" "$known" || echo "$metric"
  done
}
render --show-only templates/prometheusrule.yaml --set monitoring.prometheusRule.enabled=true \
  >"$scratch/prometheusrule.yaml"
# `spec:` is the template's last key: its body, unindented, is a Prometheus rules file.
sed -n '/^spec:$/,$p' "$scratch/prometheusrule.yaml" | sed -e '1d' -e 's/^  //' >"$scratch/rules.yaml"
if "$promtool" check rules "$scratch/rules.yaml" >"$scratch/promtool.log" 2>&1; then
  pass "prometheusrule: promtool check rules ($(grep -c -- '- alert:' "$scratch/rules.yaml") alerts)"
else
  cat "$scratch/promtool.log" >&2
  fail "prometheusrule: promtool check rules"
fi
cp "$root/charts/tests/prometheusrule.test.yaml" "$scratch/"
if "$promtool" test rules "$scratch/prometheusrule.test.yaml" >"$scratch/promtool.log" 2>&1; then
  pass "prometheusrule: promtool test rules"
else
  cat "$scratch/promtool.log" >&2
  fail "prometheusrule: promtool test rules"
fi
dashboard="$chart/dashboards/sessionizer.json"
if jq -e '.panels | length > 0' "$dashboard" >/dev/null; then
  pass "dashboard: valid JSON with $(jq '[.panels[] | select(.type != "row")] | length' "$dashboard") panels"
else
  fail "dashboard: $dashboard is not valid JSON with panels"
fi
jq -r '.panels[].targets[]?.expr' "$dashboard" >"$scratch/dashboard-queries.txt"
for file in "$scratch/rules.yaml" "$scratch/dashboard-queries.txt"; do
  missing="$(unknown_metrics "$file" | tr '\n' ' ')"
  if [[ -z "$missing" ]]; then
    pass "$(basename "$file"): every queried metric is registered"
  else
    fail "$(basename "$file"): queries metrics nothing registers: $missing"
  fi
done
render --show-only templates/grafana-dashboard.yaml --set monitoring.grafanaDashboard.enabled=true |
  sed -n '/^  sessionizer.json: |-$/,$p' | sed -e '1d' -e 's/^    //' | jq -e '.uid == "sessionizer"' >/dev/null &&
  pass "dashboard: the ConfigMap carries the dashboard" || fail "dashboard: the ConfigMap does not carry the dashboard"

# --- what must be refused -------------------------------------------------------------------------
refused=(
  "a misspelt key|--set replica=3"
  "a wrong type|--set replicas=two"
  "an unknown log format|--set logFormat=xml"
  "a nested typo|--set serviceMonitor.enable=true"
  "a misspelt monitoring toggle|--set monitoring.prometheusRule.enable=true"
  "an invalid namespace name|--set watchNamespaces={Team_A}"
  "two replicas without leader election|--set leaderElection.enabled=false"
)
for case_ in "${refused[@]}"; do
  what="${case_%%|*}"
  read -r -a flags <<<"${case_#*|}"
  if render "${flags[@]}" >/dev/null 2>"$scratch/refused.log"; then
    fail "values with $what (${flags[*]}) were accepted"
  else
    pass "refuses $what: $(grep -v -e '^\s*$' -e '^Use --debug' "$scratch/refused.log" | tail -n1 | cut -c1-110)"
  fi
done

# --- against a real API server (opt-in) -----------------------------------------------------------
if $server; then
  [[ -n "${KUBECONFIG:-}" ]] || { echo "check.sh --server: set KUBECONFIG" >&2; exit 1; }
  "$kubectl" version --request-timeout=10s >/dev/null || { echo "check.sh --server: no API server" >&2; exit 1; }
  "$kubectl" apply --server-side --field-manager=sessionizer-chart-check -f "$chart/crds/" >/dev/null
  "$kubectl" wait --for condition=Established --timeout=60s \
    crd/sessionjobs.sessionizer.dev crd/sessionjobcutovers.sessionizer.dev >/dev/null
  pass "server: CRDs applied and established"
  check_ns=sessionizer-check
  namespaces=("$check_ns" "$check_ns-a" "$check_ns-b")
  for ns in "${namespaces[@]}"; do
    "$kubectl" create namespace "$ns" --dry-run=client -o yaml | "$kubectl" apply -f - >/dev/null
  done
  server_variants=(
    "default|"
    "watch-namespaces|--set watchNamespaces={$check_ns-a,$check_ns-b}"
    "single-replica|--set replicas=1 --set leaderElection.enabled=false"
  )
  if "$kubectl" get crd servicemonitors.monitoring.coreos.com >/dev/null 2>&1; then
    server_variants+=("service-monitor|--set serviceMonitor.enabled=true")
  else
    echo "skip server: service-monitor (no monitoring.coreos.com CRDs in this cluster)"
  fi
  for variant in "${server_variants[@]}"; do
    name="${variant%%|*}"
    read -r -a flags <<<"${variant#*|}"
    if "$helm" template "$release" "$chart" --namespace "$check_ns" --kube-version "$k8s_version" \
      "${flags[@]}" | "$kubectl" apply --dry-run=server --validate=strict -f - \
      >"$scratch/server.log" 2>&1; then
      pass "server: $name: $(grep -c 'dry run' "$scratch/server.log") objects accepted"
    else
      cat "$scratch/server.log" >&2
      fail "server: $name rejected by kubectl apply --dry-run=server --validate=strict"
    fi
  done
  for example in "$root"/examples/*.yaml; do
    # The placeholders the examples document, filled in as the demo does.
    sed -e 's/${KAFKA_BOOTSTRAP}/127.0.0.1:9092/g' -e 's/${SOURCE_TOPIC}/pageviews/g' \
      -e 's/${AEROSPIKE_HOST}/127.0.0.1:3000/g' "$example" >"$scratch/example.yaml"
    if grep -n '^[^#]*\${' "$scratch/example.yaml" >&2; then
      fail "server: examples/$(basename "$example") has an undocumented placeholder"
      continue
    fi
    if "$kubectl" apply --dry-run=server --validate=strict --namespace "$check_ns" \
      -f "$scratch/example.yaml" >"$scratch/server.log" 2>&1; then
      pass "server: examples/$(basename "$example") accepted"
    else
      cat "$scratch/server.log" >&2
      fail "server: examples/$(basename "$example") rejected"
    fi
  done
fi

if ((failures)); then
  echo "charts/check.sh: $failures check(s) failed" >&2
  exit 1
fi
echo "charts/check.sh: all checks passed"
