// Package vmtest runs a package's Go tests inside a qemu guest that boots
// Debian's stock kernel, which has IPVS, the sync daemon and the other
// modules the host kernel may lack.
//
// A package puts its guest tests in files tagged
//
//	//go:build vmguest
//
// (so the host never compiles them) and names them TestGuest*. One ordinary
// host test boots the VM once for all of them:
//
//	func TestVM(t *testing.T) {
//		vmtest.Run(t, vmtest.Options{Run: "^TestGuest"})
//	}
//
// Run builds the package's test binary with CGO_ENABLED=0 and -tags vmguest,
// packs it (with the package's testdata directory and any Options.Binaries)
// into a small cpio archive appended to a cached base initramfs, boots
// qemu (TCG, no network device), streams the serial console to t.Log and
// fails the test unless the guest binary exits 0. In the guest the binary
// runs as /vmtest/pkg.test in /vmtest/pkg with DIRECTORD_VM=1 (see InGuest),
// root, a fresh initial network namespace with lo up, and the modules ip_vs
// (all schedulers), nf_conntrack, veth, bridge, dummy, ipip and macvlan
// loaded; others (nf_tables, nft_*, tun, vxlan, sch_netem, ...) load on
// demand through kmod's /sbin/modprobe. The real iproute2 ip, ss, bridge,
// tc, ipvsadm, keepalived, tcpdump, nft, nsenter (those installed on the
// host) come first on PATH and sit at /sbin, /usr/sbin, /bin and /usr/bin;
// everything else is busybox. Guest tests create their own network
// namespaces; the guest is thrown away after the run.
//
// The image is cached in $DIRECTORD_VM_CACHE, else
// /var/cache/directord-vmtest (else the user cache directory):
//
//	kernels/VERSION/{kernel.deb,vmlinuz,vmlinux}
//	initramfs/base-VERSION-KEY.cpio
//
// The kernel is the package linux-image-amd64 depends on (apt-cache depends;
// override with DIRECTORD_VM_KERNEL_PKG), fetched with apt-get download.
// vmlinux is the uncompressed kernel, booted through its PVH entry point to
// skip seconds of decompression under emulation. KEY hashes everything else
// that goes into the base image (the host tools' contents, the module lists,
// /init, this package's source), so installing a new ipvsadm or editing the
// recipe rebuilds it. Builds are serialized by an flock on the cache's lock
// file and published by rename, so parallel test processes share one build.
//
// When the VM cannot be prepared (no qemu, no apt, no kernel package) and
// under -short, Run skips with the reason; with CI=true it fails instead
// and ignores -short. The host needs: qemu-system-x86 busybox-static kmod
// iproute2 ipvsadm (and optionally keepalived tcpdump).
package vmtest
