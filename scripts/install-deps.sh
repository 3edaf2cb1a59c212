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
want xz xz-utils
want nft nftables
# The deploy tests: Ansible's syntax check, lint and runs of the roles, and
# systemd-analyze verify on the units they install.
want ansible-playbook ansible-core
want ansible-lint ansible-lint
want systemd-analyze systemd
# The VM's userland is the static busybox; a dynamic busybox does not count.
dpkg -s busybox-static >/dev/null 2>&1 || need+=(busybox-static)

# The VM tier downloads Debian's current kernel package, which apt can only
# name with its package lists in place.
kernel_known() { apt-cache depends linux-image-amd64 2>/dev/null | grep -q 'linux-image-[0-9]'; }

if [ ${#need[@]} -eq 0 ] && kernel_known; then
	echo "install-deps: everything is installed"
	exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
	echo "install-deps: missing Debian packages (${need[*]}) or apt lists; run as root to install them" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
if [ ${#need[@]} -gt 0 ]; then
	echo "install-deps: installing ${need[*]}"
	apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
