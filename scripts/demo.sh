#!/usr/bin/env bash
# The demo lab (make demo): a directord pair with a VIP, DR and NAT services
# to real HTTP servers and a client, each in its own network namespace. It
# prints the topology, `directorctl status` and `directorctl ipvs` of the
# master, runs one drill (SIGTERM to the master) under load with its
# timeline and the client's outage, then removes everything.
#
# The lab needs kernel IPVS. Where the host kernel has it, the lab runs in
# namespaces on the host; otherwise inside the qemu guest of the VM test
# tier (internal/vmtest), booted once for the demo. The lab itself is the
# e2e package's TestGuestDemo.
set -euo pipefail
cd "$(dirname "$0")/.."

host_ipvs() {
	[ "$(id -u)" -eq 0 ] || return 1
	[ -e /proc/net/ip_vs ] || modprobe -q ip_vs 2>/dev/null || return 1
	[ -e /proc/net/ip_vs ]
}

if host_ipvs; then
	echo "demo: the host kernel has IPVS: the lab runs in network namespaces on the host"
	bin=$PWD/bin
	cd e2e # local directory mode: go test shows a passing test's output
	DIRECTORD_E2E_BIN=$bin go test -tags vmguest -count=1 -run '^TestGuestDemo$' -timeout 5m |
		sed -E 's/^DEMO\| //'
else
	echo "demo: the host kernel has no IPVS: the lab runs in the qemu guest (Debian's kernel)"
	cd e2e
	DIRECTORD_E2E=demo go test -count=1 -run '^TestVM$' -timeout 10m
fi
