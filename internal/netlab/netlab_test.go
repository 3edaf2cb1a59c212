//go:build linux

package netlab

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// The smoke test of the harness: two hosts on one switch reach each other
// over IPv4 and IPv6, and neither the lab's life nor its teardown leaves an
// interface or a namespace behind on the machine running the tests.
func TestNetnsTwoHostsPingOverSwitch(t *testing.T) {
	Require(t)
	t.Parallel()
	rootBefore := rootLinks(t)
	nsBefore := namespaces(t)

	lab := New(t)
	lb1 := lab.AddHost("lb1", "192.0.2.11/24", "2001:db8::11/64")
	lb2 := lab.AddHost("lb2", "192.0.2.12/24", "2001:db8::12/64")

	owned := lab.Namespaces()
	if want := []string{lab.Switch, lb1.Name, lb2.Name}; !slices.Equal(owned, want) {
		t.Fatalf("lab namespaces = %v, want %v", owned, want)
	}
	for _, n := range owned {
		if !strings.HasPrefix(n, lab.Prefix) {
			t.Errorf("namespace %s lacks the lab prefix %s", n, lab.Prefix)
		}
		if _, err := os.Stat(filepath.Join(RunDir, n)); err != nil {
			t.Errorf("namespace %s not bound in %s: %v", n, RunDir, err)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	for _, c := range []struct {
		from *Host
		to   netip.Addr
	}{
		{lb1, lb2.IPv4()}, {lb2, lb1.IPv4()},
		{lb1, lb2.IPv6()}, {lb2, lb1.IPv6()},
	} {
		if err := c.from.Ping(ctx, c.to); err != nil {
			t.Errorf("%s cannot reach %s over the switch: %v", c.from, c.to, err)
		}
	}
	// Negative control: Ping must be able to fail, or the above proves nothing.
	absent, cancelAbsent := context.WithTimeout(ctx, 3*time.Second)
	defer cancelAbsent()
	if err := lb1.Ping(absent, netip.MustParseAddr("192.0.2.99")); err == nil {
		t.Error("ping of 192.0.2.99, which no host has, succeeded")
	}

	if diff := cmp.Diff(rootBefore, rootLinks(t)); diff != "" {
		t.Errorf("root namespace interfaces changed while the lab ran (-before +now):\n%s", diff)
	}

	if err := lab.Close(); err != nil {
		t.Fatalf("lab.Close: %v", err)
	}
	if err := lab.Close(); err != nil {
		t.Errorf("second lab.Close (as cleanup will do): %v", err)
	}

	nsAfter := namespaces(t)
	for _, n := range nsAfter {
		if strings.HasPrefix(n, lab.Prefix) {
			t.Errorf("namespace %s left behind after Close", n)
		}
		if !slices.Contains(nsBefore, n) && !strings.HasPrefix(n, "dl") {
			t.Logf("namespace %s appeared meanwhile (not a netlab name, someone else's)", n)
		}
	}
	if diff := cmp.Diff(rootBefore, rootLinks(t)); diff != "" {
		t.Errorf("root namespace interfaces changed by the lab's teardown (-before +after):\n%s", diff)
	}
}

// Do must put fn in the host's namespace, where eth0 is the lab's veth, and
// must give every thread it borrowed back in the root namespace.
func TestNetnsDoRunsFunctionInHostNamespace(t *testing.T) {
	Require(t)
	t.Parallel()
	lab := New(t)
	h := lab.AddHost("lb1", "192.0.2.11/24")

	var inside netlink.Link
	if err := h.Do(func() error {
		var err error
		inside, err = netlink.LinkByName("eth0")
		return err
	}); err != nil {
		t.Fatalf("LinkByName(eth0) inside %s: %v", h, err)
	}
	if inside.Type() != "veth" || inside.Attrs().HardwareAddr.String() != h.MAC().String() {
		t.Errorf("eth0 inside %s: type %s MAC %s, want veth with MAC %s",
			h, inside.Type(), inside.Attrs().HardwareAddr, h.MAC())
	}

	root, err := netlink.NewHandleAt(rootNS, unix.NETLINK_ROUTE)
	if err != nil {
		t.Fatalf("netlink handle in root namespace: %v", err)
	}
	defer root.Close()
	if outside, err := root.LinkByName("eth0"); err == nil && outside.Attrs().HardwareAddr.String() == h.MAC().String() {
		t.Errorf("the root namespace's eth0 has the lab host's MAC %s", h.MAC())
	}

	sentinel := errors.New("sentinel")
	if err := h.Do(func() error { return sentinel }); !errors.Is(err, sentinel) {
		t.Errorf("Do returned %v, want fn's error wrapped", err)
	}
	if err := h.Do(func() error { runtime.Goexit(); return nil }); !errors.Is(err, errGoexit) {
		t.Errorf("Do with a Goexit-ing fn returned %v, want errGoexit", err)
	}
	func() {
		defer func() {
			if r := recover(); r != "boom" {
				t.Errorf("panic in fn re-raised as %v, want boom", r)
			}
		}()
		h.Do(func() error { panic("boom") })
	}()

	// Borrow many threads, then look at as many as possible: none may still
	// be in the host's namespace.
	for range 50 {
		if err := h.Do(func() error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	var wrong int
	for range 50 {
		wg.Go(func() {
			runtime.LockOSThread()
			defer runtime.UnlockOSThread()
			cur, err := netns.Get()
			if err != nil {
				t.Error(err)
				return
			}
			defer cur.Close()
			if !cur.Equal(rootNS) {
				mu.Lock()
				wrong++
				mu.Unlock()
			}
			time.Sleep(time.Millisecond) // keep the thread busy so others are used
		})
	}
	wg.Wait()
	if wrong > 0 {
		t.Errorf("%d goroutines ran on a thread left outside the root namespace", wrong)
	}
}

// Run must execute inside the host both through `ip netns exec` and through
// the setns fallback used where no iproute2 ip exists.
func TestNetnsRunEntersHostNamespace(t *testing.T) {
	Require(t)
	t.Parallel()
	for _, mode := range []string{"ip netns exec", "setns"} {
		t.Run(mode, func(t *testing.T) {
			t.Parallel()
			lab := New(t)
			if mode == "setns" {
				lab.ipCmd = ""
			} else if lab.ipCmd == "" {
				t.Skip("no iproute2 ip here; the setns subtest covers Run")
			}
			h := lab.AddHost("lb1", "192.0.2.11/24")
			ctx := t.Context()

			out, err := h.Run(ctx, "readlink", "/proc/self/ns/net")
			if err != nil {
				t.Fatal(err)
			}
			if got, want := strings.TrimSpace(string(out)), nsLink(t, h.Path); got != want {
				t.Errorf("command ran in %s, want %s (%s)", got, want, h.Name)
			}

			out, err = h.Run(ctx, "sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 3")
			var ee *exec.ExitError
			if !errors.As(err, &ee) || ee.ExitCode() != 3 {
				t.Errorf("failing command: err = %v, want exit status 3", err)
			}
			for _, s := range []string{"to-stdout", "to-stderr"} {
				if !strings.Contains(string(out), s) || err == nil || !strings.Contains(err.Error(), s) {
					t.Errorf("%q missing from output %q or error %v", s, out, err)
				}
			}
		})
	}
}

// Kill takes down the whole process group, as a crash of a daemon and its
// helpers would, and every member started in the host's namespace.
func TestNetnsStartKillStopsProcessGroup(t *testing.T) {
	Require(t)
	t.Parallel()
	lab := New(t)
	h := lab.AddHost("lb1", "192.0.2.11/24")

	p := h.Start("sh", "-c", "sleep 300 & echo child=$!; wait")
	child := waitForOutput(t, p, regexp.MustCompile(`child=(\d+)`))
	want := nsLink(t, h.Path)
	for _, pid := range []int{p.Pid(), child} {
		if got := pidNSLink(t, pid); got != want {
			t.Errorf("pid %d runs in %s, want %s", pid, got, want)
		}
	}
	if got := pgid(t, child); got != p.Pid() {
		t.Errorf("child %d is in process group %d, want %d", child, got, p.Pid())
	}

	if err := p.Wait(100 * time.Millisecond); !errors.Is(err, ErrTimeout) {
		t.Errorf("Wait on a running process = %v, want ErrTimeout", err)
	}
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	if sig := exitSignal(p.Wait(5 * time.Second)); sig != syscall.SIGKILL {
		t.Errorf("process ended by %v, want SIGKILL", sig)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !dead(child) {
		if time.Now().After(deadline) {
			t.Fatalf("child %d of the killed group still runs", child)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Signal reaches the process itself, and Output holds both streams.
func TestNetnsStartSignalAndOutput(t *testing.T) {
	Require(t)
	t.Parallel()
	lab := New(t)
	h := lab.AddHost("lb1", "192.0.2.11/24")

	p := h.Start("sleep", "300")
	if err := p.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if sig := exitSignal(p.Wait(5 * time.Second)); sig != syscall.SIGTERM {
		t.Errorf("sleep ended by %v, want SIGTERM", sig)
	}

	q := h.Start("sh", "-c", "echo to-stdout; echo to-stderr >&2; exit 7")
	var ee *exec.ExitError
	if err := q.Wait(5 * time.Second); !errors.As(err, &ee) || ee.ExitCode() != 7 {
		t.Errorf("Wait = %v, want exit status 7", err)
	}
	if out := string(q.Output()); !strings.Contains(out, "to-stdout") || !strings.Contains(out, "to-stderr") {
		t.Errorf("Output = %q, want both streams", out)
	}
}

// Teardown stops what the test left running: politely first, then by force
// for a process that ignores SIGTERM.
func TestNetnsCloseStopsProcesses(t *testing.T) {
	Require(t)
	t.Parallel()
	lab := New(t)
	h := lab.AddHost("lb1", "192.0.2.11/24")
	polite := h.Start("sleep", "300")
	stubborn := h.Start("sh", "-c", `trap "" TERM; echo armed; sleep 300`)
	waitForOutput(t, stubborn, regexp.MustCompile(`(armed)`))

	if err := lab.Close(); err != nil {
		t.Fatalf("lab.Close: %v", err)
	}
	for _, c := range []struct {
		p    *Proc
		want syscall.Signal
	}{{polite, syscall.SIGTERM}, {stubborn, syscall.SIGKILL}} {
		select {
		case <-c.p.Done():
			if sig := exitSignal(c.p.Wait(0)); sig != c.want {
				t.Errorf("%q ended by %v, want %v", c.p.Argv, sig, c.want)
			}
		default:
			t.Errorf("%q still running after Close", c.p.Argv)
		}
	}
	if _, err := h.start([]string{"true"}); err == nil {
		t.Error("Start after Close succeeded")
	}
}

// A host can sit on several segments, e.g. the LAN and a dedicated sync
// network; a segment is its own broadcast domain, and unplugging a port
// takes the host's carrier away.
func TestNetnsSecondSegmentAndUnplug(t *testing.T) {
	Require(t)
	t.Parallel()
	lab := New(t)
	r1 := lab.AddHost("r1", "192.0.2.21/24")
	r2 := lab.AddHost("director-primary", "192.0.2.22/24") // port name too long for "<label>-eth0"
	lanOnly := lab.AddHost("r3", "198.51.100.3/24")

	syncSeg := lab.NewSegment("sync")
	s1 := syncSeg.AddLink(r1, "eth1", "198.51.100.1/24")
	syncSeg.AddLink(r2, "eth1", "198.51.100.2/24")
	extra := lab.AddLink(r1, "eth2", "203.0.113.1/24")

	if got, want := linkNames(r1), []string{"eth0", "eth1", "eth2"}; !slices.Equal(got, want) {
		t.Errorf("r1 links = %v, want %v", got, want)
	}
	for _, c := range []struct {
		l      *Link
		bridge string
	}{{s1, syncSeg.Bridge}, {extra, lab.LAN.Bridge}, {r2.Link("eth0"), lab.LAN.Bridge}} {
		if len(c.l.Port) > 15 {
			t.Errorf("switch port %q longer than IFNAMSIZ-1", c.l.Port)
		}
		if got := masterOf(t, lab, c.l.Port); got != c.bridge {
			t.Errorf("%s %s: port %s on %q, want %q", c.l.Host(), c.l.Name, c.l.Port, got, c.bridge)
		}
	}
	if syncSeg.Bridge == lab.LAN.Bridge {
		t.Fatalf("sync segment reuses LAN bridge %s", syncSeg.Bridge)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := r1.Ping(ctx, netip.MustParseAddr("198.51.100.2")); err != nil {
		t.Errorf("no reachability over the sync segment: %v", err)
	}
	// 198.51.100.3 is on the LAN, not on sync, where r1 routes that subnet.
	absent, cancelAbsent := context.WithTimeout(ctx, 3*time.Second)
	defer cancelAbsent()
	if err := r1.Ping(absent, lanOnly.IPv4()); err == nil {
		t.Error("the sync segment reached a host that is only on the LAN")
	}

	if err := s1.Unplug(); err != nil {
		t.Fatal(err)
	}
	waitOperState(t, r1, "eth1", func(s netlink.LinkOperState) bool { return s != netlink.OperUp })
	if err := s1.Plug(); err != nil {
		t.Fatal(err)
	}
	waitOperState(t, r1, "eth1", func(s netlink.LinkOperState) bool { return s == netlink.OperUp })
}

// Two labs of one process may use the same host labels and addresses: their
// namespaces differ and their networks do not meet.
func TestNetnsLabsWithSameLabelsAreIsolated(t *testing.T) {
	Require(t)
	t.Parallel()
	labA, labB := New(t), New(t)
	a1 := labA.AddHost("lb1", "192.0.2.11/24")
	labA.AddHost("lb2", "192.0.2.12/24")
	b1 := labB.AddHost("lb1", "192.0.2.11/24")
	if a1.Name == b1.Name || labA.Switch == labB.Switch {
		t.Fatalf("namespace names collide: %s/%s, %s/%s", a1.Name, b1.Name, labA.Switch, labB.Switch)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Second)
	defer cancel()
	if err := a1.Ping(ctx, netip.MustParseAddr("192.0.2.12")); err != nil {
		t.Errorf("lab A: %v", err)
	}
	absent, cancelAbsent := context.WithTimeout(ctx, 3*time.Second)
	defer cancelAbsent()
	if err := b1.Ping(absent, netip.MustParseAddr("192.0.2.12")); err == nil {
		t.Error("lab B reached 192.0.2.12, which only lab A has")
	}
}

// TESTING.md: traffic stays in the documentation ranges.
func TestParseAddrsAcceptsOnlyDocumentationRanges(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{"192.0.2.11/24", true},
		{"198.51.100.1/24", true},
		{"203.0.113.9/32", true},
		{"2001:db8::11/64", true},
		{"fe80::11/64", true},
		{"10.0.0.1/8", false},
		{"192.0.2.11/16", false}, // wider than 192.0.2.0/24
		{"2001:db9::1/64", false},
		{"192.0.2.11", false}, // no prefix length
	} {
		_, err := parseAddrs([]string{c.in})
		if (err == nil) != c.ok {
			t.Errorf("parseAddrs(%q) error = %v, want ok=%t", c.in, err, c.ok)
		}
	}
}

// TESTING.md: a tier that cannot run must fail in CI, not skip silently.
func TestRequireFailsInCIAndSkipsElsewhere(t *testing.T) {
	unusable := errors.New("not root")
	for _, c := range []struct {
		ci, wantFatal, wantSkip string
	}{
		{"true", "cannot run in CI", ""},
		{"", "", "skipping"},
	} {
		t.Setenv("CI", c.ci)
		rec := &recordTB{TB: t}
		done := make(chan struct{})
		go func() { // Fatalf/Skipf end the goroutine, as in a real test
			defer close(done)
			requireUsable(rec, unusable)
		}()
		<-done
		if !strings.Contains(rec.fatal, c.wantFatal) || (c.wantFatal == "") != (rec.fatal == "") {
			t.Errorf("CI=%q: Fatalf message %q, want one containing %q", c.ci, rec.fatal, c.wantFatal)
		}
		if !strings.Contains(rec.skip, c.wantSkip) || (c.wantSkip == "") != (rec.skip == "") {
			t.Errorf("CI=%q: Skipf message %q, want one containing %q", c.ci, rec.skip, c.wantSkip)
		}
	}
}

type recordTB struct {
	testing.TB
	fatal, skip string
}

func (r *recordTB) Helper() {}
func (r *recordTB) Fatalf(format string, args ...any) {
	r.fatal = fmt.Sprintf(format, args...)
	runtime.Goexit()
}
func (r *recordTB) Skipf(format string, args ...any) {
	r.skip = fmt.Sprintf(format, args...)
	runtime.Goexit()
}

func rootLinks(t *testing.T) []Iface {
	t.Helper()
	l, err := RootLinks()
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func namespaces(t *testing.T) []string {
	t.Helper()
	n, err := Namespaces()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// nsLink is what /proc/PID/ns/net reads as for a process in the namespace
// bound at path: "net:[inode]".
func nsLink(t *testing.T, path string) string {
	t.Helper()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("net:[%d]", fi.Sys().(*syscall.Stat_t).Ino)
}

func pidNSLink(t *testing.T, pid int) string {
	t.Helper()
	l, err := os.Readlink(fmt.Sprintf("/proc/%d/ns/net", pid))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

// statFields returns the fields of /proc/PID/stat after the command name.
func statFields(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	s := string(b)
	return strings.Fields(s[strings.LastIndexByte(s, ')')+1:]), nil
}

func pgid(t *testing.T, pid int) int {
	t.Helper()
	f, err := statFields(pid)
	if err != nil {
		t.Fatal(err)
	}
	n, err := strconv.Atoi(f[2]) // state ppid pgrp
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// dead reports a process that is gone or a zombie; an orphan may wait for a
// reaper that a container's init never provides.
func dead(pid int) bool {
	f, err := statFields(pid)
	return err != nil || f[0] == "Z"
}

// waitForOutput waits until re matches p's output and returns its first
// submatch as a number (0 if it is not one).
func waitForOutput(t *testing.T, p *Proc, re *regexp.Regexp) int {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		if m := re.FindSubmatch(p.Output()); m != nil {
			n, _ := strconv.Atoi(string(m[1]))
			return n
		}
		if time.Now().After(deadline) {
			t.Fatalf("%q printed no match for %s; output: %q", p.Argv, re, p.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// exitSignal is the signal that ended the process, from Wait's error.
func exitSignal(err error) syscall.Signal {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		if ws, ok := ee.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			return ws.Signal()
		}
	}
	return 0
}

func linkNames(h *Host) []string {
	var names []string
	for _, l := range h.Links() {
		names = append(names, l.Name)
	}
	return names
}

func masterOf(t *testing.T, lab *Lab, port string) string {
	t.Helper()
	sw := lab.SwitchNetlink()
	l, err := sw.LinkByName(port)
	if err != nil {
		t.Fatalf("switch port %s: %v", port, err)
	}
	m, err := sw.LinkByIndex(l.Attrs().MasterIndex)
	if err != nil {
		return ""
	}
	return m.Attrs().Name
}

func waitOperState(t *testing.T, h *Host, ifname string, ok func(netlink.LinkOperState) bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := h.Netlink().LinkByName(ifname)
		if err != nil {
			t.Fatal(err)
		}
		if ok(l.Attrs().OperState) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s %s stuck in oper state %v", h, ifname, l.Attrs().OperState)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// A test binary killed with SIGKILL leaves its namespaces behind; the first
// lab of the next run removes those whose process is gone, and no others.
func TestNetnsNewLabSweepsStaleNamespaces(t *testing.T) {
	Require(t)
	// A pid that cannot be running: above pid_max's ceiling.
	stale := "dl4194305-1-sw"
	if _, err := newNamedNS(stale); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteNamedNS(stale) })
	live := fmt.Sprintf("dl%d-999-sw", os.Getppid())
	if _, err := newNamedNS(live); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = deleteNamedNS(live) })

	// New sweeps once per process; call the sweep itself.
	sweepStaleOnce()
	names := namespaces(t)
	if slices.Contains(names, stale) {
		t.Errorf("stale namespace %s not removed", stale)
	}
	if !slices.Contains(names, live) {
		t.Errorf("namespace %s of a live process was removed", live)
	}
}
