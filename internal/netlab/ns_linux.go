package netlab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// RunDir is where named network namespaces are bind-mounted. It is the path
// iproute2 uses, so `ip netns exec` and `ip -n` work on a lab's namespaces.
const RunDir = "/run/netns"

// rootNS is the namespace the process started in. It is captured during
// package initialisation, when the main goroutine is still locked to the
// main thread, because later a thread borrowed by Do could be elsewhere.
var rootNS, rootNSErr = netns.Get()

// errGoexit reports a function that ended its goroutine (t.FailNow,
// runtime.Goexit) instead of returning.
var errGoexit = errors.New("function called runtime.Goexit (t.FailNow?) instead of returning")

// onScratchThread runs fn on a fresh goroutine locked to its OS thread, and
// puts the thread back into the namespace it started in afterwards. fn may
// switch namespaces. If the thread cannot be restored it stays locked, so the
// runtime destroys it when the goroutine exits instead of reusing a thread in
// the wrong namespace. A panic in fn is re-raised in the caller.
func onScratchThread(fn func() error) error {
	type result struct {
		err      error
		panicked bool
		value    any
	}
	done := make(chan result, 1)
	go func() {
		res := result{err: errGoexit}
		defer func() { done <- res }()

		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			res.err = fmt.Errorf("get current netns: %w", err)
			return
		}
		defer orig.Close()
		defer func() {
			if err := netns.Set(orig); err != nil {
				res.err = errors.Join(res.err, fmt.Errorf("restore netns %s: %w", orig, err))
				return // the thread stays locked and dies with this goroutine
			}
			runtime.UnlockOSThread()
		}()
		defer func() {
			if r := recover(); r != nil {
				res.panicked, res.value = true, r
			}
		}()
		res.err = fn()
	}()
	res := <-done
	if res.panicked {
		panic(res.value)
	}
	return res.err
}

// doIn runs fn with its OS thread inside the namespace bound at path.
func doIn(path string, fn func() error) error {
	target, err := netns.GetFromPath(path)
	if err != nil {
		return fmt.Errorf("open netns %s: %w", path, err)
	}
	defer target.Close()
	return onScratchThread(func() error {
		if err := netns.Set(target); err != nil {
			return fmt.Errorf("enter netns %s: %w", path, err)
		}
		return fn()
	})
}

// newNamedNS creates a namespace bound at RunDir/name without moving any
// goroutine of the caller into it.
func newNamedNS(name string) (netns.NsHandle, error) {
	h := netns.None()
	err := onScratchThread(func() error {
		var err error
		h, err = netns.NewNamed(name)
		return err
	})
	if err != nil {
		// NewNamed leaves the empty mount point behind when the bind fails.
		if rmErr := os.Remove(filepath.Join(RunDir, name)); rmErr != nil && !errors.Is(rmErr, fs.ErrNotExist) {
			err = errors.Join(err, rmErr)
		}
		return netns.None(), fmt.Errorf("create netns %s: %w", name, err)
	}
	return h, nil
}

// deleteNamedNS unbinds and removes RunDir/name. The namespace itself goes
// away once no process, socket or file descriptor holds it any more.
func deleteNamedNS(name string) error {
	path := filepath.Join(RunDir, name)
	if err := unix.Unmount(path, unix.MNT_DETACH); err != nil && !errors.Is(err, unix.EINVAL) && !errors.Is(err, unix.ENOENT) {
		return fmt.Errorf("unmount %s: %w", path, err)
	}
	if err := os.Remove(path); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("remove %s: %w", path, err)
	}
	if _, err := os.Lstat(path); !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("netns %s still present after delete (stat: %v)", path, err)
	}
	return nil
}

// shareRunDir makes RunDir a shared mount, as `ip netns add` does. Children
// of `ip netns exec` get a slave copy of the mount table; without shared
// propagation their copy of every lab's namespace bind mount would keep
// those namespaces alive after the lab deleted them.
var shareRunDir = sync.OnceValue(func() error {
	if err := os.MkdirAll(RunDir, 0o755); err != nil {
		return fmt.Errorf("create %s: %w", RunDir, err)
	}
	err := unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	if errors.Is(err, unix.EINVAL) { // not a mount point yet
		if err := unix.Mount(RunDir, RunDir, "none", unix.MS_BIND|unix.MS_REC, ""); err != nil {
			return fmt.Errorf("bind %s onto itself: %w", RunDir, err)
		}
		err = unix.Mount("", RunDir, "none", unix.MS_SHARED|unix.MS_REC, "")
	}
	if err != nil {
		return fmt.Errorf("make %s a shared mount: %w", RunDir, err)
	}
	return nil
})

// writeSysctl sets a sysctl of the calling thread's network namespace;
// /proc/sys/net resolves to the namespace of the thread that opens it.
// A missing key (IPv6 disabled in the kernel) is not an error.
func writeSysctl(key, value string) error {
	path := "/proc/sys/" + strings.ReplaceAll(key, ".", "/")
	err := os.WriteFile(path, []byte(value), 0o644)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("sysctl %s=%s: %w", key, value, err)
	}
	return nil
}

// probe reports why network namespaces cannot be used here, or nil.
var probe = sync.OnceValue(func() error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("not root (euid %d)", os.Geteuid())
	}
	if rootNSErr != nil {
		return fmt.Errorf("open own netns: %w", rootNSErr)
	}
	// Root without CAP_SYS_ADMIN (an unprivileged container) fails here.
	if err := onScratchThread(func() error { return unix.Unshare(unix.CLONE_NEWNET) }); err != nil {
		return fmt.Errorf("unshare network namespace: %w", err)
	}
	return nil
})

// Require stops the test unless network namespaces can be created: with a
// clear skip on a developer machine, but with a failure when CI=true, because
// a privileged tier that silently skips in CI proves nothing.
func Require(t testing.TB) {
	t.Helper()
	requireUsable(t, probe())
}

// requireUsable applies Require's skip-or-fail rule to a probe result.
func requireUsable(t testing.TB, err error) {
	t.Helper()
	if err != nil {
		if inCI() {
			t.Fatalf("netlab: network namespace tests cannot run in CI (CI=true): %v", err)
		}
		t.Skipf("netlab: skipping, needs root with network namespaces (CAP_SYS_ADMIN): %v", err)
	}
}

// Iface describes an interface of the root namespace, enough to tell whether
// a test left one behind.
type Iface struct {
	// Index is the ifindex; the kernel does not reuse it soon, so a link
	// deleted and re-created under the same name still shows up as a change.
	Index int
	// Name is the interface name.
	Name string
	// Kind is the netlink link type, e.g. "veth", "bridge", "device".
	Kind string
}

// String formats the interface as "index:name(kind)" for failure messages.
func (i Iface) String() string { return fmt.Sprintf("%d:%s(%s)", i.Index, i.Name, i.Kind) }

// RootLinks lists the interfaces of the namespace the test process started
// in, whichever thread asks, so a test can prove the host gained nothing.
func RootLinks() ([]Iface, error) {
	if rootNSErr != nil {
		return nil, fmt.Errorf("open root netns: %w", rootNSErr)
	}
	h, err := netlink.NewHandleAt(rootNS, unix.NETLINK_ROUTE)
	if err != nil {
		return nil, fmt.Errorf("netlink handle in root netns: %w", err)
	}
	defer h.Close()
	var links []netlink.Link
	for range 5 { // a dump racing with a change is interrupted; ask again
		links, err = h.LinkList()
		if !errors.Is(err, netlink.ErrDumpInterrupted) {
			break
		}
	}
	if err != nil {
		return nil, fmt.Errorf("list links in root netns: %w", err)
	}
	out := make([]Iface, 0, len(links))
	for _, l := range links {
		out = append(out, Iface{Index: l.Attrs().Index, Name: l.Attrs().Name, Kind: l.Type()})
	}
	slices.SortFunc(out, func(a, b Iface) int { return a.Index - b.Index })
	return out, nil
}

// Namespaces lists the named network namespaces in RunDir, sorted; none
// (and no error) if the directory does not exist.
func Namespaces() ([]string, error) {
	entries, err := os.ReadDir(RunDir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", RunDir, err)
	}
	names := make([]string, 0, len(entries))
	for _, e := range entries {
		names = append(names, e.Name())
	}
	return names, nil
}

// LookPath finds a tool in the sbin and bin directories before PATH. The
// test VM's busybox shell runs its own applets ahead of PATH, so callers
// should exec the returned full path rather than a bare name.
func LookPath(name string) (string, error) {
	for _, dir := range []string{"/sbin", "/usr/sbin", "/bin", "/usr/bin"} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0 {
			return p, nil
		}
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("look up %s: %w", name, err)
	}
	return p, nil
}

// iproute2 finds iproute2's ip, rejecting busybox's reduced applet (which
// has no `netns exec`) by asking each candidate for its version.
var iproute2 = sync.OnceValues(func() (string, error) {
	candidates := []string{"/sbin/ip", "/usr/sbin/ip", "/bin/ip"}
	if p, err := exec.LookPath("ip"); err == nil {
		candidates = append(candidates, p)
	}
	for _, c := range candidates {
		out, err := exec.Command(c, "-V").CombinedOutput()
		if err == nil && strings.Contains(string(out), "iproute2") {
			return c, nil
		}
	}
	return "", fmt.Errorf("no iproute2 ip among %v", candidates)
})
