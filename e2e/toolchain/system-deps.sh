#!/usr/bin/env bash
# Checks the machine for what the build needs beyond Rust, Go, Java and Maven, and installs the
# missing Debian packages when running as root: librdkafka (built from source by rdkafka-sys)
# needs the curl and SASL headers. Prints what it does; exits non-zero with the reason otherwise.
set -euo pipefail

for tool in cargo go java mvn cmake pkg-config; do
  command -v "$tool" >/dev/null || { echo "[deps] missing required tool: $tool" >&2; exit 1; }
done

missing=()
pkg-config --exists libcurl || missing+=(libcurl4-openssl-dev)
pkg-config --exists libsasl2 || missing+=(libsasl2-dev)
[[ ${#missing[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "[deps] missing Debian packages: ${missing[*]} (install them as root)" >&2
  exit 1
fi
echo "[deps] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
