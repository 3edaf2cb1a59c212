package vmtest

// initScript is the guest's /init (PID 1), run by busybox sh. It prepares a
// minimal system, loads the kernel modules listed in /etc/vmtest/modules,
// runs the per-run payload /vmtest/run.sh and reports its exit status as the
// final marker line "VMTEST-EXIT-<nonce>=<status>" before powering off.
//
// Debian's busybox shell runs its own applets before searching PATH, so every
// tool that must be the real one (kmod's modprobe, iproute2's ip) is called
// by its full path.
const initScript = `#!/bin/sh
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
export HOME=/root TMPDIR=/tmp
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs -o mode=1777 tmpfs /dev/shm
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup 2>/dev/null
mount -t debugfs debugfs /sys/kernel/debug 2>/dev/null
mkdir -p /run/netns /var/run
hostname vmtest
exec </dev/null
/usr/sbin/ip link set lo up
echo "VMTEST: kernel $(uname -r), $(nproc) cpus"
# One modprobe for all (each kmod start costs time under emulation); the
# list starts with crc32c_generic: libcrc32c (needed by ip_vs) needs a
# crc32c provider. On failure, retry one by one to name the culprit.
if ! /usr/sbin/modprobe -a $(cat /etc/vmtest/modules); then
	for m in $(cat /etc/vmtest/modules); do
		/usr/sbin/modprobe "$m" || echo "VMTEST: modprobe $m failed"
	done
fi
nonce=$(cat /vmtest/nonce 2>/dev/null)
echo "VMTEST-BOOTED"
if [ -f /vmtest/run.sh ]; then
	/bin/sh /vmtest/run.sh
	rc=$?
else
	echo "VMTEST: no /vmtest/run.sh in the initramfs"
	rc=127
fi
sync
echo "VMTEST-EXIT-$nonce=$rc"
poweroff -f
sleep 5
`
