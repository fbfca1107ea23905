#!/usr/bin/env bash
# Installs the Debian packages mtipc's build and tests need, when missing:
# pkg-config and libssl-dev (the openssl crate links the system OpenSSL),
# protobuf-compiler (protoc: the etcd-client crate of the permit arbiter's
# etcd backend generates its gRPC code at build time), etcd-server (the
# etcd tests and benchmark start a real etcd on loopback), s6 and runit
# (the baselines of the HA benchmark, cli/benches/ha_restart.rs: s6-supervise
# and runsv supervise the same program as mtipc-ha; installed without their
# recommended packages: runit's, runit-run, would make runit a service of
# the host's init), python3-venv unless the interpreter can make a venv on
# its own.
# Runs apt-get as root (directly, or through sudo when available).
set -euo pipefail
need=()
for pkg in pkg-config libssl-dev protobuf-compiler etcd-server python3-venv; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || need+=("$pkg")
done
bare=()
for pkg in s6 runit; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || bare+=("$pkg")
done
# python3 -m venv must work for the interpreter we use (pyenv builds have it built in).
if [ ${#need[@]} -gt 0 ] && [ "${need[*]}" = "python3-venv" ] && python3 -c 'import venv, ensurepip' 2>/dev/null; then
  need=()
fi
[ ${#need[@]} -eq 0 ] && [ ${#bare[@]} -eq 0 ] && exit 0
echo "ensure-deps: installing ${need[*]} ${bare[*]}"
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
$SUDO apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}"
fi
if [ ${#bare[@]} -gt 0 ]; then
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${bare[@]}"
fi
