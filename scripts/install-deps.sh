#!/usr/bin/env bash
# Installs what the test tiers and the demo need from Debian's archive, only
# when something is missing. Go modules come from the module proxy through
# `go mod download`.
set -euo pipefail

need=()
have() { command -v "$1" >/dev/null 2>&1 || [ -x "$1" ]; }
want() { have "$1" || need+=("$2"); }

want qemu-system-x86_64 qemu-system-x86
want modprobe kmod
want cpio cpio
want /usr/sbin/ip iproute2
want keepalived keepalived
want ipvsadm ipvsadm
want tcpdump tcpdump
want ping iputils-ping
# The VM's userland is the static busybox; a dynamic busybox does not count.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)

if [ ${#need[@]} -eq 0 ]; then
	echo "install-deps: everything is installed"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing Debian packages: ${need[*]} (run as root to install them)" >&2
	exit 1
fi
echo "install-deps: installing ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
