#!/usr/bin/env bash
# The peers the benchmarks compare against, on top of install-deps.sh:
# dnsmasq, Kea's perfdhcp (kea-admin), dnsperf, iperf3 and keepalived (bench
# failover's Neutron L3 HA peer). Not needed for the tests.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends dnsmasq-base kea-admin dnsperf iperf3 keepalived >/dev/null
