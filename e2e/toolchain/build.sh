#!/usr/bin/env bash
# Builds, once, the real servers the local environment runs: Kubernetes (kube-apiserver,
# kube-controller-manager, kubectl), etcd, helm, MinIO and promtool from their official Go modules through
# the Go module proxy, and Apache Kafka from Maven Central. Everything lands outside the repo in
# $SESSIONIZER_CACHE/tools/<name>-<version>/, so a second run finds it and returns at once.
#
# usage: e2e/toolchain/build.sh [k8s|etcd|helm|minio|promtool|kafka ...]   (default: all)
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=versions.env
source "$here/versions.env"
cache=${SESSIONIZER_CACHE:-$HOME/.cache/sessionizer}
mkdir -p "$cache/tools"

log() { printf '[toolchain] %s\n' "$*" >&2; }

# build_go NAME VERSION LDFLAGS: installs every `tool` of toolchain/NAME/go.mod.
build_go() {
  local name=$1 version=$2 ldflags=$3 rename=${4:-} out="$cache/tools/$1-$2"
  if [[ -f "$out/.complete" ]]; then log "$name $version: cached in $out"; return; fi
  log "$name $version: building from the Go module proxy into $out (first run only)"
  local start=$SECONDS
  rm -rf "$out" && mkdir -p "$out/bin"
  (cd "$here/$name" && GOFLAGS=-mod=readonly GOBIN="$out/bin" go install -trimpath -ldflags "$ldflags" tool)
  # A main package at a /vN module path installs under its parent's name: rename=FROM:TO.
  if [[ -n "$rename" ]]; then mv "$out/bin/${rename%%:*}" "$out/bin/${rename##*:}"; fi
  touch "$out/.complete"
  log "$name $version: built in $((SECONDS - start))s"
}

build_k8s() {
  local minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  local ld="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ld+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ld+=" -X $pkg.gitTreeState=clean"
  done
  build_go k8s "$K8S_VERSION" "$ld"
}

build_etcd() { build_go etcd "$ETCD_VERSION" "-s -w" server:etcd; }
build_helm() {
  build_go helm "$HELM_VERSION" "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
}
build_minio() { build_go minio "$MINIO_VERSION" "-s -w"; }
build_promtool() { build_go promtool "$PROMTOOL_VERSION" "-s -w"; }

build_kafka() {
  local out="$cache/tools/kafka-$KAFKA_VERSION"
  if [[ -f "$out/.complete" ]]; then log "kafka $KAFKA_VERSION: cached in $out"; return; fi
  log "kafka $KAFKA_VERSION: fetching the broker jars from Maven Central into $out"
  rm -rf "$out" && mkdir -p "$out/libs"
  mvn -q -B -f "$here/kafka/pom.xml" -Dkafka.version="$KAFKA_VERSION" \
    dependency:copy-dependencies -DincludeScope=runtime -DoutputDirectory="$out/libs"
  touch "$out/.complete"
  log "kafka $KAFKA_VERSION: $(ls "$out/libs" | wc -l) jars"
}

targets=("$@")
[[ ${#targets[@]} -gt 0 ]] || targets=(k8s etcd helm minio promtool kafka)
for t in "${targets[@]}"; do "build_$t"; done
