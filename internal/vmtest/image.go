package vmtest

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/elf"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"runtime"
	"sort"
	"strings"
	"syscall"
	"time"
)

// recipeVersion is mixed into the base image's cache key. The key also
// covers this package's source files when they can be read (not with
// -trimpath), so editing the recipe rebuilds the image; bump recipeVersion
// for changes that must invalidate images built from trimmed binaries.
const recipeVersion = "4"

// bootModules are loaded by the guest's /init, in this order, if the kernel
// has them as modules (missing optional ones are left out of the list).
// crc32c_generic must come before ip_vs: libcrc32c needs a crc32c provider.
var bootModules = []struct {
	name     string
	required bool
}{
	{"crc32c_generic", true},
	{"libcrc32c", true},
	{"nf_conntrack", true},
	{"ip_vs", true},
	{"ip_vs_rr", true},
	{"ip_vs_wrr", true},
	{"ip_vs_lc", false},
	{"ip_vs_wlc", false},
	{"ip_vs_lblc", false},
	{"ip_vs_lblcr", false},
	{"ip_vs_dh", false},
	{"ip_vs_sh", false},
	{"ip_vs_sed", false},
	{"ip_vs_nq", false},
	{"ip_vs_fo", false},
	{"ip_vs_ovf", false},
	{"ip_vs_mh", false},
	{"ip_vs_twos", false},
	{"veth", true},
	{"bridge", true},
	{"dummy", true},
	{"ipip", false},
	{"macvlan", false},
}

// extraModules are put into the image (with their dependencies) but not
// loaded at boot: the kernel or a test loads them on demand through
// /sbin/modprobe (kmod).
var extraModules = []string{
	"ip_tunnel", "tunnel4", "ip6_tunnel", "sit", "ipvlan", "tun", "vxlan",
	"nf_nat", "nf_tables", "nft_ct", "nft_nat", "nft_chain_nat", "nft_masq",
	"nft_redir", "nft_reject", "nft_reject_inet", "nft_reject_ipv4", "nft_reject_ipv6",
	"nft_fib_inet", "nft_fib_ipv4", "nft_fib_ipv6", "nft_compat", "nft_limit",
	"nft_log", "nft_numgen", "nft_hash", "nft_quota", "nfnetlink_log",
	"nf_conntrack_netlink", "x_tables", "xt_ipvs", "xt_conntrack", "xt_mark",
	"sch_netem", "inet_diag", "tcp_diag", "udp_diag", "raw_diag", "af_packet_diag",
	"crc32c_intel",
}

// guestTools are copied from the host with their shared libraries. The real
// binary goes to /usr/sbin/NAME (kmod to /usr/bin/kmod), and every busybox
// applet link of the same name in /bin, /sbin, /usr/bin and /usr/sbin is
// replaced by a link to it, so PATH look-ups and full paths find the real
// tool. Busybox's shell still prefers its own applet for a bare name.
var guestTools = []struct {
	name     string
	required bool
}{
	{"ip", true},
	{"ipvsadm", true},
	{"keepalived", false},
	{"tcpdump", false},
	{"ss", false},
	{"bridge", false},
	{"tc", false},
	{"nft", false},
	{"nsenter", false},
	{"unshare", false},
	{"arping", false},
	{"curl", false},
	{"conntrack", false},
}

var kmodLinks = []string{"modprobe", "insmod", "rmmod", "lsmod", "modinfo", "depmod"}

var etcFiles = map[string]string{
	"etc/passwd": "root:x:0:0:root:/root:/bin/sh\n" +
		"daemon:x:1:1:daemon:/usr/sbin:/bin/false\n" +
		"tcpdump:x:100:101::/nonexistent:/bin/false\n" +
		"keepalived_script:x:101:102::/nonexistent:/bin/false\n" +
		"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n",
	"etc/group":         "root:x:0:\ndaemon:x:1:\ntcpdump:x:101:\nkeepalived_script:x:102:\nnogroup:x:65534:\n",
	"etc/hosts":         "127.0.0.1\tlocalhost vmtest\n::1\tlocalhost ip6-localhost ip6-loopback\n",
	"etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\nnetworks: files\nprotocols: files\nservices: files\n",
	"etc/hostname":      "vmtest\n",
}

// hostEtcFiles are copied from the host when present (protocol and service
// names for getprotobyname/getservbyname and Go's net package).
var hostEtcFiles = []string{"/etc/protocols", "/etc/services"}

// image is a prepared kernel plus base initramfs.
type image struct {
	KernelVersion string // e.g. 6.1.0-56-amd64
	Kernel        string // path of vmlinux (PVH ELF) if it could be extracted, else vmlinuz
	Base          string // path of the base initramfs (newc cpio, length a multiple of 4)
}

// cacheRoot returns the cache directory: $DIRECTORD_VM_CACHE, else
// /var/cache/directord-vmtest if usable, else the user's cache directory.
func cacheRoot() (string, error) {
	if d := os.Getenv("DIRECTORD_VM_CACHE"); d != "" {
		return d, os.MkdirAll(d, 0o755)
	}
	d := "/var/cache/directord-vmtest"
	if err := os.MkdirAll(d, 0o755); err == nil && syscall.Access(d, 2 /* W_OK */) == nil {
		return d, nil
	}
	uc, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("no usable cache directory (set DIRECTORD_VM_CACHE): %w", err)
	}
	d = filepath.Join(uc, "directord-vmtest")
	return d, os.MkdirAll(d, 0o755)
}

// lockCache takes an exclusive flock on the cache, serializing builds of
// parallel test processes. The returned function releases it.
func lockCache(root string) (func(), error) {
	f, err := os.OpenFile(filepath.Join(root, "lock"), os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return nil, err
	}
	for {
		err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("flock %s: %w", f.Name(), err)
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// prepareImage returns the cached kernel and base initramfs, downloading and
// building whatever is missing. logf reports progress of slow steps.
func prepareImage(logf func(format string, args ...any)) (*image, error) {
	root, err := cacheRoot()
	if err != nil {
		return nil, err
	}
	pkg, pkgErr := cachedKernelPackage(root)
	var kver string
	if pkgErr == nil {
		kver = strings.TrimPrefix(pkg, "linux-image-")
	} else {
		// No apt (or no package lists): fall back to a cached kernel.
		kver = newestCachedKernel(root)
		if kver == "" {
			return nil, pkgErr
		}
	}
	tools, err := resolveTools()
	if err != nil {
		return nil, err
	}
	key, err := baseKey(kver, tools)
	if err != nil {
		return nil, err
	}
	img := &image{
		KernelVersion: kver,
		Kernel:        filepath.Join(root, "kernels", kver, "vmlinuz"),
		Base:          filepath.Join(root, "initramfs", "base-"+kver+"-"+key+".cpio"),
	}
	defer func() {
		// Mark them used, for pruning (see pruneCache).
		now := time.Now()
		os.Chtimes(img.Base, now, now)
		os.Chtimes(img.Kernel, now, now)
		// Booting the uncompressed kernel through its PVH entry point skips
		// the decompressor, which takes seconds under TCG.
		if vmlinux := filepath.Join(filepath.Dir(img.Kernel), "vmlinux"); exists(vmlinux) {
			img.Kernel = vmlinux
		}
	}()
	if exists(img.Kernel) && exists(img.Base) {
		return img, nil
	}

	unlock, err := lockCache(root)
	if err != nil {
		return nil, err
	}
	defer unlock()
	// Another process may have built it while we waited for the lock.
	if exists(img.Kernel) && exists(img.Base) {
		return img, nil
	}
	removeStale(filepath.Join(root, "kernels"))
	removeStale(filepath.Join(root, "initramfs"))
	var tree *kernelTree
	defer func() {
		if tree != nil {
			tree.cleanup()
		}
	}()
	if !exists(img.Kernel) {
		if pkgErr != nil {
			return nil, pkgErr
		}
		start := time.Now()
		tree, err = fetchKernel(root, pkg, kver)
		if err != nil {
			return nil, err
		}
		logf("vmtest: fetched kernel %s in %v", pkg, time.Since(start).Round(time.Millisecond))
	}
	if !exists(img.Base) {
		start := time.Now()
		if tree == nil {
			if tree, err = extractKernel(root, kver); err != nil {
				return nil, err
			}
		}
		if err := buildBase(root, tree, tools, img.Base); err != nil {
			return nil, err
		}
		st, _ := os.Stat(img.Base)
		logf("vmtest: built base initramfs %s (%d KiB) in %v", filepath.Base(img.Base), st.Size()>>10, time.Since(start).Round(time.Millisecond))
	}
	pruneCache(root, img)
	return img, nil
}

// removeStale deletes temporary entries (".tmp-*", ".x-*", ...) left in dir
// by an interrupted build. Call it with the cache lock held.
func removeStale(dir string) {
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), ".") {
			os.RemoveAll(filepath.Join(dir, e.Name()))
		}
	}
}

func exists(p string) bool {
	_, err := os.Stat(p)
	return err == nil
}

var kernelPkgRE = regexp.MustCompile(`^linux-image-[0-9][^ ]*-amd64$`)

// kernelPackage names Debian's current stock amd64 kernel package, e.g.
// linux-image-6.1.0-56-amd64 (the dependency of linux-image-amd64).
// $DIRECTORD_VM_KERNEL_PKG overrides it.
func kernelPackage() (string, error) {
	if p := os.Getenv("DIRECTORD_VM_KERNEL_PKG"); p != "" {
		if !kernelPkgRE.MatchString(p) {
			return "", fmt.Errorf("DIRECTORD_VM_KERNEL_PKG=%q is not a linux-image-VERSION-amd64 package name", p)
		}
		return p, nil
	}
	if _, err := exec.LookPath("apt-cache"); err != nil {
		return "", errors.New("apt-cache not found: the VM kernel comes from Debian's linux-image-amd64 package")
	}
	out, err := exec.Command("apt-cache", "depends", "linux-image-amd64").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("apt-cache depends linux-image-amd64: %v: %s (run apt-get update)", err, bytes.TrimSpace(out))
	}
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && strings.HasSuffix(f[0], "Depends:") && kernelPkgRE.MatchString(f[1]) {
			return f[1], nil
		}
	}
	return "", fmt.Errorf("apt-cache depends linux-image-amd64 names no linux-image-*-amd64 package (run apt-get update):\n%s", out)
}

// cachedKernelPackage is kernelPackage, remembered in ROOT/kernel-package
// until apt's package lists change (apt-cache takes half a second).
func cachedKernelPackage(root string) (string, error) {
	if os.Getenv("DIRECTORD_VM_KERNEL_PKG") != "" {
		return kernelPackage()
	}
	st, err := os.Stat("/var/lib/apt/lists")
	if err != nil {
		return kernelPackage()
	}
	stamp := st.ModTime().UTC().Format(time.RFC3339Nano)
	memo := filepath.Join(root, "kernel-package")
	if b, err := os.ReadFile(memo); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 && f[0] == stamp && kernelPkgRE.MatchString(f[1]) {
			return f[1], nil
		}
	}
	pkg, err := kernelPackage()
	if err == nil {
		tmp := fmt.Sprintf("%s.%d", memo, os.Getpid())
		if os.WriteFile(tmp, []byte(stamp+" "+pkg+"\n"), 0o644) == nil {
			os.Rename(tmp, memo)
		}
	}
	return pkg, err
}

func newestCachedKernel(root string) string {
	ents, _ := os.ReadDir(filepath.Join(root, "kernels"))
	var best string
	var bestTime time.Time
	for _, e := range ents {
		st, err := os.Stat(filepath.Join(root, "kernels", e.Name(), "vmlinuz"))
		if err == nil && !strings.HasPrefix(e.Name(), ".") && st.ModTime().After(bestTime) {
			best, bestTime = e.Name(), st.ModTime()
		}
	}
	return best
}

// kernelTree is a kernel package extracted into a temporary directory.
type kernelTree struct {
	dir     string // extraction root
	modules string // dir/lib/modules/VERSION
	version string
}

func (k *kernelTree) cleanup() { os.RemoveAll(k.dir) }

// fetchKernel downloads the kernel package into ROOT/kernels/VERSION/
// (kernel.deb and vmlinuz, published by an atomic rename) and returns the
// extracted tree for building the base image.
func fetchKernel(root, pkg, kver string) (*kernelTree, error) {
	kdir := filepath.Join(root, "kernels")
	if err := os.MkdirAll(kdir, 0o755); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(kdir, ".tmp-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(tmp)
	// apt's _apt user must be able to write here, or apt warns and
	// downloads unsandboxed; either works.
	os.Chmod(tmp, 0o777)
	defer os.Chmod(tmp, 0o755)
	dl := exec.Command("apt-get", "download", pkg)
	dl.Dir = tmp
	if out, err := dl.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("apt-get download %s: %v\n%s", pkg, err, out)
	}
	debs, _ := filepath.Glob(filepath.Join(tmp, pkg+"_*.deb"))
	if len(debs) != 1 {
		return nil, fmt.Errorf("apt-get download %s produced %d .deb files", pkg, len(debs))
	}
	deb := filepath.Join(tmp, "kernel.deb")
	if err := os.Rename(debs[0], deb); err != nil {
		return nil, err
	}
	tree, err := extractDeb(kdir, deb, kver)
	if err != nil {
		return nil, err
	}
	vmlinuz := filepath.Join(tree.dir, "boot", "vmlinuz-"+kver)
	if err := copyFile(filepath.Join(tmp, "vmlinuz"), vmlinuz, 0o644); err != nil {
		tree.cleanup()
		return nil, fmt.Errorf("kernel package %s has no boot/vmlinuz-%s: %w", pkg, kver, err)
	}
	if err := extractVmlinux(filepath.Join(tmp, "vmlinux"), filepath.Join(tmp, "vmlinuz")); err != nil {
		// Not fatal: qemu boots the compressed kernel, only slower.
		os.WriteFile(filepath.Join(tmp, "vmlinux.error"), []byte(err.Error()+"\n"), 0o644)
	}
	os.Chmod(tmp, 0o755)
	final := filepath.Join(kdir, kver)
	os.RemoveAll(final) // a partial leftover (we hold the lock)
	if err := os.Rename(tmp, final); err != nil {
		tree.cleanup()
		return nil, err
	}
	return tree, nil
}

// extractKernel extracts the cached kernel.deb of version kver.
func extractKernel(root, kver string) (*kernelTree, error) {
	deb := filepath.Join(root, "kernels", kver, "kernel.deb")
	if !exists(deb) {
		return nil, fmt.Errorf("cached kernel %s has no kernel.deb (remove %s)", kver, filepath.Dir(deb))
	}
	return extractDeb(filepath.Join(root, "kernels"), deb, kver)
}

func extractDeb(parent, deb, kver string) (*kernelTree, error) {
	dir, err := os.MkdirTemp(parent, ".x-")
	if err != nil {
		return nil, err
	}
	tree := &kernelTree{dir: dir, version: kver}
	if out, err := exec.Command("dpkg-deb", "-x", deb, dir).CombinedOutput(); err != nil {
		tree.cleanup()
		return nil, fmt.Errorf("dpkg-deb -x %s: %v\n%s", deb, err, out)
	}
	for _, m := range []string{"lib/modules", "usr/lib/modules"} {
		if exists(filepath.Join(dir, m, kver, "modules.order")) {
			tree.modules = filepath.Join(dir, m, kver)
			break
		}
	}
	if tree.modules == "" {
		tree.cleanup()
		return nil, fmt.Errorf("%s has no lib/modules/%s", deb, kver)
	}
	// depmod into the extracted tree to learn the dependencies.
	if out, err := exec.Command(depmodPath(), "-b", dir, kver).CombinedOutput(); err != nil {
		tree.cleanup()
		return nil, fmt.Errorf("depmod -b %s %s: %v\n%s", dir, kver, err, out)
	}
	return tree, nil
}

func depmodPath() string {
	for _, p := range []string{"/usr/sbin/depmod", "/sbin/depmod"} {
		if exists(p) {
			return p
		}
	}
	return "depmod"
}

// hostTool is a host binary to be copied into the guest.
type hostTool struct {
	name  string // guest name
	src   string // host path, symlinks resolved
	dst   string // guest path
	links []string
	sum   string // sha256 of the content
}

// findHostBinary looks in the system directories (not PATH, which may lack
// the sbin directories for a non-root user).
func findHostBinary(name string) string {
	for _, d := range []string{"/usr/sbin", "/usr/bin", "/sbin", "/bin", "/usr/local/sbin", "/usr/local/bin"} {
		p := filepath.Join(d, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode()&0o111 != 0 {
			if r, err := filepath.EvalSymlinks(p); err == nil {
				return r
			}
		}
	}
	return ""
}

// resolveTools finds busybox, kmod and the guest tools on the host.
func resolveTools() ([]hostTool, error) {
	var tools []hostTool
	var missing []string
	bb := findHostBinary("busybox")
	if bb == "" {
		missing = append(missing, "busybox (busybox-static)")
	}
	kmod := findHostBinary("kmod")
	if kmod == "" {
		missing = append(missing, "kmod")
	}
	if bb != "" {
		tools = append(tools, hostTool{name: "busybox", src: bb, dst: "bin/busybox"})
	}
	if kmod != "" {
		t := hostTool{name: "kmod", src: kmod, dst: "usr/bin/kmod"}
		for _, l := range kmodLinks {
			for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin"} {
				t.links = append(t.links, d+"/"+l)
			}
		}
		tools = append(tools, t)
	}
	for _, gt := range guestTools {
		src := findHostBinary(gt.name)
		if src != "" && bb != "" && src == bb {
			src = "" // a busybox applet link, not the real tool
		}
		if src == "" {
			if gt.required {
				missing = append(missing, gt.name)
			}
			continue
		}
		t := hostTool{name: gt.name, src: src, dst: "usr/sbin/" + gt.name}
		for _, d := range []string{"bin", "sbin", "usr/bin"} {
			t.links = append(t.links, d+"/"+gt.name)
		}
		tools = append(tools, t)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("host tools missing for the VM image: %s (apt-get install -y qemu-system-x86 busybox-static kmod iproute2 ipvsadm)", strings.Join(missing, ", "))
	}
	for i := range tools {
		sum, err := fileSHA256(tools[i].src)
		if err != nil {
			return nil, err
		}
		tools[i].sum = sum
	}
	return tools, nil
}

func fileSHA256(p string) (string, error) {
	f, err := os.Open(p)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// baseKey hashes everything that goes into the base image except the
// kernel modules themselves (which are fixed by the kernel version).
func baseKey(kver string, tools []hostTool) (string, error) {
	h := sha256.New()
	fmt.Fprintf(h, "recipe %s\nkernel %s\ninit %q\n", recipeVersion, kver, initScript)
	if _, self, _, ok := runtime.Caller(0); ok {
		for _, f := range []string{"image.go", "init.go", "cpio.go"} {
			if b, err := os.ReadFile(filepath.Join(filepath.Dir(self), f)); err == nil {
				fmt.Fprintf(h, "src %s %x\n", f, sha256.Sum256(b))
			}
		}
	}
	for _, m := range bootModules {
		fmt.Fprintf(h, "boot %s %v\n", m.name, m.required)
	}
	fmt.Fprintf(h, "extra %q\n", extraModules)
	for _, t := range tools {
		fmt.Fprintf(h, "tool %s %s %s %q\n", t.name, t.dst, t.sum, t.links)
	}
	keys := make([]string, 0, len(etcFiles))
	for k := range etcFiles {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(h, "etc %s %q\n", k, etcFiles[k])
	}
	for _, p := range hostEtcFiles {
		if b, err := os.ReadFile(p); err == nil {
			fmt.Fprintf(h, "hostetc %s %x\n", p, sha256.Sum256(b))
		}
	}
	return hex.EncodeToString(h.Sum(nil))[:16], nil
}

// buildBase writes the base initramfs to out (atomically).
func buildBase(root string, kt *kernelTree, tools []hostTool, out string) error {
	t := newFSTree()
	for _, d := range []string{"bin", "sbin", "usr/bin", "usr/sbin", "usr/local/bin", "usr/local/sbin",
		"lib", "lib64", "etc/vmtest", "proc", "sys", "dev", "run", "tmp", "root", "mnt", "var/tmp", "vmtest"} {
		t.Dir(d)
	}
	// The kernel opens /dev/console for /init's stdio before /init mounts
	// devtmpfs, so the initramfs needs the node itself.
	t.CharDev("dev/console", 0o600, 5, 1)

	// busybox applets first, real tools replace them afterwards.
	var bb string
	for _, tl := range tools {
		if tl.name == "busybox" {
			bb = tl.src
		}
	}
	out1, err := exec.Command(bb, "--list-full").Output()
	if err != nil {
		return fmt.Errorf("%s --list-full: %v", bb, err)
	}
	for _, a := range strings.Fields(string(out1)) {
		a = strings.TrimPrefix(a, "/")
		if a == "bin/busybox" || a == "" {
			continue
		}
		t.Symlink(a, "/bin/busybox")
	}
	// Applets some tests rely on by full path.
	t.Symlink("bin/sh", "/bin/busybox")

	libs := map[string]string{} // guest path -> host path
	for _, tl := range tools {
		t.File(tl.dst, tl.src, 0o755)
		for _, l := range tl.links {
			if l != tl.dst {
				t.Symlink(l, "/"+tl.dst)
			}
		}
		if err := sharedLibs(tl.src, libs); err != nil {
			return err
		}
	}
	for g, h := range libs {
		t.File(g, h, 0o755)
	}
	for p, c := range etcFiles {
		t.Data(p, []byte(c), 0o644)
	}
	for _, p := range hostEtcFiles {
		if b, err := os.ReadFile(p); err == nil {
			t.Data(strings.TrimPrefix(p, "/"), b, 0o644)
		}
	}
	t.Data("init", []byte(initScript), 0o755)

	modDir, err := os.MkdirTemp(filepath.Dir(kt.dir), ".mods-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(modDir)
	load, err := stageModules(kt, modDir)
	if err != nil {
		return err
	}
	if err := t.CopyDir("lib/modules/"+kt.version, filepath.Join(modDir, "lib", "modules", kt.version)); err != nil {
		return err
	}
	t.Data("etc/vmtest/modules", []byte(strings.Join(load, "\n")+"\n"), 0o644)

	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(out), ".tmp-base-")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name())
	bw := bufio.NewWriterSize(f, 1<<20)
	// Uncompressed: unpacking a gzip'ed archive costs the guest about half a
	// second under TCG, more than reading the larger file costs the host.
	if err := t.Write(bw); err != nil {
		f.Close()
		return err
	}
	if err := bw.Flush(); err != nil {
		f.Close()
		return err
	}
	// The kernel requires the next archive to start on a 4-byte boundary.
	if st, err := f.Stat(); err == nil && st.Size()%4 != 0 {
		f.Write(make([]byte, 4-st.Size()%4))
	}
	if err := f.Close(); err != nil {
		return err
	}
	os.Chmod(f.Name(), 0o644)
	return os.Rename(f.Name(), out)
}

// pruneCache removes base images unused for a day and kernels unused for a
// week, except the ones in use. Entries are marked used by their mtime, so a
// base that another process is about to read is never old. Call it with the
// cache lock held.
func pruneCache(root string, keep *image) {
	now := time.Now()
	bases, _ := os.ReadDir(filepath.Join(root, "initramfs"))
	for _, e := range bases {
		p := filepath.Join(root, "initramfs", e.Name())
		if st, err := os.Stat(p); err == nil && p != keep.Base && now.Sub(st.ModTime()) > 24*time.Hour {
			os.Remove(p)
		}
	}
	kernels, _ := os.ReadDir(filepath.Join(root, "kernels"))
	for _, e := range kernels {
		d := filepath.Join(root, "kernels", e.Name())
		st, err := os.Stat(filepath.Join(d, "vmlinuz"))
		if err == nil && e.Name() != keep.KernelVersion && now.Sub(st.ModTime()) > 7*24*time.Hour {
			os.RemoveAll(d)
		}
	}
}

var modSuffixes = []string{".ko", ".ko.xz", ".ko.zst", ".ko.gz"}

func modName(p string) string {
	b := path.Base(p)
	for _, s := range modSuffixes {
		if strings.HasSuffix(b, s) {
			b = strings.TrimSuffix(b, s)
			break
		}
	}
	return strings.ReplaceAll(b, "-", "_")
}

// stageModules copies the wanted modules and their dependencies from the
// extracted kernel into dst/lib/modules/VERSION, runs depmod there, and
// returns the list of modules to load at boot.
func stageModules(kt *kernelTree, dst string) ([]string, error) {
	depText, err := os.ReadFile(filepath.Join(kt.modules, "modules.dep"))
	if err != nil {
		return nil, err
	}
	deps := map[string][]string{} // module name -> [own file, dep files...]
	for _, line := range strings.Split(string(depText), "\n") {
		file, rest, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		deps[modName(file)] = append([]string{file}, strings.Fields(rest)...)
	}
	builtin := map[string]bool{}
	if b, err := os.ReadFile(filepath.Join(kt.modules, "modules.builtin")); err == nil {
		for _, l := range strings.Fields(string(b)) {
			builtin[modName(l)] = true
		}
	}
	files := map[string]bool{}
	var load, missing []string
	want := func(name string, required, boot bool) {
		if builtin[name] {
			return
		}
		d, ok := deps[name]
		if !ok {
			if required {
				missing = append(missing, name)
			}
			return
		}
		for _, f := range d {
			files[f] = true
		}
		if boot {
			load = append(load, name)
		}
	}
	for _, m := range bootModules {
		want(m.name, m.required, true)
	}
	for _, m := range extraModules {
		want(m, false, false)
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("kernel %s lacks required modules: %s", kt.version, strings.Join(missing, ", "))
	}
	mdst := filepath.Join(dst, "lib", "modules", kt.version)
	for f := range files {
		if err := copyFile(filepath.Join(mdst, f), filepath.Join(kt.modules, f), 0o644); err != nil {
			return nil, err
		}
	}
	for _, f := range []string{"modules.order", "modules.builtin", "modules.builtin.modinfo"} {
		if exists(filepath.Join(kt.modules, f)) {
			if err := copyFile(filepath.Join(mdst, f), filepath.Join(kt.modules, f), 0o644); err != nil {
				return nil, err
			}
		}
	}
	if out, err := exec.Command(depmodPath(), "-b", dst, kt.version).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("depmod -b %s %s: %v\n%s", dst, kt.version, err, out)
	}
	return load, nil
}

// sharedLibs adds the shared libraries (and the dynamic loader) of the ELF
// binary bin to libs (guest path -> host path), as ldd reports them.
func sharedLibs(bin string, libs map[string]string) error {
	f, err := elf.Open(bin)
	if err != nil {
		return fmt.Errorf("%s: %w", bin, err)
	}
	var interp string
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			b, err := io.ReadAll(p.Open())
			if err == nil {
				interp = strings.TrimRight(string(b), "\x00")
			}
		}
	}
	f.Close()
	if interp == "" {
		return nil // static
	}
	add := func(guest string) error {
		host, err := filepath.EvalSymlinks(guest)
		if err != nil {
			return fmt.Errorf("library %s of %s: %w", guest, bin, err)
		}
		libs[strings.TrimPrefix(filepath.Clean(guest), "/")] = host
		return nil
	}
	if err := add(interp); err != nil {
		return err
	}
	out, err := exec.Command("ldd", bin).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ldd %s: %v\n%s", bin, err, out)
	}
	for _, line := range strings.Split(string(out), "\n") {
		line = strings.TrimSpace(line)
		if line == "" {
			continue
		}
		if strings.Contains(line, "not found") {
			return fmt.Errorf("ldd %s: %s", bin, line)
		}
		var p string
		if _, after, ok := strings.Cut(line, "=> "); ok {
			p = strings.Fields(after)[0]
		} else if strings.HasPrefix(line, "/") {
			p = strings.Fields(line)[0]
		}
		if strings.HasPrefix(p, "/") {
			if err := add(p); err != nil {
				return err
			}
		}
	}
	return nil
}

func copyFile(dst, src string, perm fs.FileMode) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, perm)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// extractVmlinux writes the uncompressed ELF kernel embedded in the bzImage
// vmlinuz to dst, after checking that it has a PVH entry point (the Xen ELF
// note PHYS32_ENTRY) so that qemu can boot it directly.
func extractVmlinux(dst, vmlinuz string) error {
	b, err := os.ReadFile(vmlinuz)
	if err != nil {
		return err
	}
	magics := []struct {
		magic []byte
		cmd   []string
	}{
		{[]byte("\xfd7zXZ\x00"), []string{"xz", "-dc", "--single-stream"}},
		{[]byte("\x28\xb5\x2f\xfd"), []string{"zstd", "-dcq"}},
		{[]byte("\x1f\x8b\x08"), nil},
	}
	var elfData []byte
	for _, m := range magics {
		i := bytes.Index(b, m.magic)
		if i < 0 {
			continue
		}
		if m.cmd == nil {
			zr, err := gzip.NewReader(bytes.NewReader(b[i:]))
			if err != nil {
				continue
			}
			zr.Multistream(false)
			elfData, err = io.ReadAll(zr)
			if err != nil && len(elfData) == 0 {
				continue
			}
		} else {
			cmd := exec.Command(m.cmd[0], m.cmd[1:]...)
			cmd.Stdin = bytes.NewReader(b[i:])
			var out bytes.Buffer
			cmd.Stdout = &out
			cmd.Run() // trailing data after the stream makes some tools complain
			elfData = out.Bytes()
		}
		if bytes.HasPrefix(elfData, []byte("\x7fELF")) {
			break
		}
		elfData = nil
	}
	if elfData == nil {
		return errors.New("no compressed ELF kernel found in " + vmlinuz)
	}
	f, err := elf.NewFile(bytes.NewReader(elfData))
	if err != nil {
		return err
	}
	if !hasPVHNote(f) {
		return errors.New("kernel has no PVH entry point")
	}
	tmp := dst + ".tmp"
	if err := os.WriteFile(tmp, elfData, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}

func hasPVHNote(f *elf.File) bool {
	const xenElfnotePhys32Entry = 18
	for _, p := range f.Progs {
		if p.Type != elf.PT_NOTE {
			continue
		}
		b, err := io.ReadAll(p.Open())
		if err != nil {
			continue
		}
		for len(b) >= 12 {
			namesz := binary.LittleEndian.Uint32(b[0:])
			descsz := binary.LittleEndian.Uint32(b[4:])
			typ := binary.LittleEndian.Uint32(b[8:])
			off := 12 + int((namesz+3)&^3)
			end := off + int((descsz+3)&^3)
			if end > len(b) || off > len(b) {
				break
			}
			name := strings.TrimRight(string(b[12:12+int(namesz)]), "\x00")
			if name == "Xen" && typ == xenElfnotePhys32Entry {
				return true
			}
			b = b[end:]
		}
	}
	return false
}
