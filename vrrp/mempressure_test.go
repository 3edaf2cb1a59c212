package vrrp

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Memory pressure for the saturation benchmark's -mem cases: the machine
// is brought close to out of memory and kept reclaiming. Anonymous memory
// (no swap here, so it cannot be reclaimed) holds all but memHeadroom of
// what the kernel reports available; in what is left, one process maps,
// touches and unmaps memChurn over and over, and another reads a file
// larger than the rest through the page cache, so the kernel keeps
// evicting file pages (other processes' code among them) to find room. A
// daemon whose code or stacks are not locked in memory faults them back
// in from disk on its timing path.

// memHogEnv, in the environment of this test binary, turns it into a
// memory hog (see memHog) instead of running tests.
const memHogEnv = "DIRECTORD_MEMHOG"

const (
	memHeadroom = 768 << 20
	memChurn    = 512 << 20
	memFile     = 2048 << 20
)

// memHog runs the hog mode spec ("hold:BYTES" or "churn:BYTES") until
// killed or until its parent is gone (it is also started with a parent
// death signal: a hog must never outlive its test). It volunteers first
// for the OOM killer.
func memHog(spec string) error {
	mode, size, ok := strings.Cut(spec, ":")
	n, err := strconv.ParseInt(size, 10, 64)
	if !ok || err != nil || n <= 0 || (mode != "hold" && mode != "churn") {
		return fmt.Errorf("%s=%q: want hold:BYTES or churn:BYTES", memHogEnv, spec)
	}
	parent := os.Getppid()
	orphaned := func() bool { return os.Getppid() != parent }
	if err := os.WriteFile("/proc/self/oom_score_adj", []byte("1000"), 0o644); err != nil {
		return err
	}
	mapTouch := func() ([]byte, error) {
		b, err := unix.Mmap(-1, 0, int(n), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANONYMOUS|unix.MAP_POPULATE)
		if err != nil {
			return nil, fmt.Errorf("map %d bytes: %w", n, err)
		}
		for i := 0; i < len(b); i += os.Getpagesize() {
			b[i] = 1 // populated already; written so no page is the shared zero page
		}
		return b, nil
	}
	switch mode {
	case "hold":
		if _, err := mapTouch(); err != nil {
			return err
		}
		fmt.Println("MEMHOG holding")
		for !orphaned() {
			time.Sleep(100 * time.Millisecond)
		}
		return nil
	case "churn":
		fmt.Println("MEMHOG churning")
		for !orphaned() {
			b, err := mapTouch()
			if err != nil {
				return err
			}
			if err := unix.Munmap(b); err != nil {
				return err
			}
		}
	}
	return nil
}

// meminfo is a field of /proc/meminfo ("MemAvailable:") in bytes.
func meminfo(field string) (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: %q: %w", sc.Text(), err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/meminfo: no %s", field)
}

// memStall is /proc/pressure/memory's "some" total: how long at least one
// task waited for memory, cumulative.
func memStall() (time.Duration, error) {
	b, err := os.ReadFile("/proc/pressure/memory")
	if err != nil {
		return 0, err
	}
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(l, "some ") {
			continue
		}
		for _, f := range strings.Fields(l) {
			if v, ok := strings.CutPrefix(f, "total="); ok {
				us, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return 0, fmt.Errorf("/proc/pressure/memory: %q: %w", l, err)
				}
				return time.Duration(us) * time.Microsecond, nil
			}
		}
	}
	return 0, fmt.Errorf("/proc/pressure/memory: no some total in %q", b)
}

// memPressure starts the hogs and the page-cache reader for the rest of
// the test, and returns a func that tells whether they all still run.
func memPressure(t *testing.T) (alive func() error) {
	t.Helper()
	if _, err := memStall(); err != nil {
		t.Fatalf("memory pressure needs the kernel's pressure accounting: %v", err)
	}
	// With swap, holding nearly all memory would push other processes
	// out to it: another test than this one.
	if swap, err := meminfo("SwapTotal:"); err != nil || swap != 0 {
		t.Fatalf("memory pressure is measured without swap: SwapTotal %d bytes (%v)", swap, err)
	}
	dir := t.TempDir()
	var fs unix.Statfs_t
	if err := unix.Statfs(dir, &fs); err != nil || fs.Type == unix.TMPFS_MAGIC {
		t.Fatalf("%s: the page-cache file must be on a disk, not in memory (statfs: %v)", dir, err)
	}
	file := filepath.Join(dir, "pagecache")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+file, "bs=1M", fmt.Sprintf("count=%d", memFile>>20), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("write %s: %v: %s", file, err, out)
	}
	avail, err := meminfo("MemAvailable:")
	if err != nil {
		t.Fatal(err)
	}
	hold := avail - memHeadroom - memChurn
	if hold < 0 {
		t.Fatalf("%d MB available: too little to leave %d MB", avail>>20, (memHeadroom+memChurn)>>20)
	}
	type proc struct {
		cmd  *exec.Cmd
		what string
	}
	var procs []proc
	t.Cleanup(func() {
		for _, p := range procs {
			_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
			_ = p.cmd.Wait()
		}
	})
	start := func(cmd *exec.Cmd, what, ready string) {
		t.Helper()
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatalf("start the %s: %v", what, err)
		}
		procs = append(procs, proc{cmd, what})
		if ready == "" {
			return
		}
		line, err := bufio.NewReader(out).ReadString('\n')
		if strings.TrimSpace(line) != ready {
			t.Fatalf("the %s said %q (%v), want %q", what, line, err, ready)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	hog := func(spec string) *exec.Cmd {
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), memHogEnv+"="+spec)
		return cmd
	}
	start(hog(fmt.Sprintf("hold:%d", hold)), "holding hog", "MEMHOG holding")
	start(hog(fmt.Sprintf("churn:%d", memChurn)), "churning hog", "MEMHOG churning")
	start(exec.Command("sh", "-c", "while kill -0 $PPID 2>/dev/null; do cat "+file+" > /dev/null; done"), "page-cache reader", "")
	t.Logf("memory pressure: %d MB held, %d MB churned, a %d MB file read in a loop, %d MB were available",
		hold>>20, memChurn>>20, memFile>>20, avail>>20)
	return func() error {
		for _, p := range procs {
			// WNOWAIT: an ended process stays to be reaped by the
			// cleanup, so its process group id is not reused meanwhile.
			var info unix.Siginfo
			if err := unix.Waitid(unix.P_PID, p.cmd.Process.Pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err == nil && info.Signo != 0 {
				return fmt.Errorf("the %s ended", p.what)
			}
		}
		return nil
	}
}

func TestMemHogHoldsAndChurns(t *testing.T) {
	for _, bad := range []string{"hold", "grab:4096", "hold:-1"} {
		if err := memHog(bad); err == nil {
			t.Errorf("%q was accepted", bad)
		}
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	hog := func(mode, ready string) *exec.Cmd {
		t.Helper()
		cmd := exec.Command(self)
		cmd.Env = append(os.Environ(), fmt.Sprintf("%s=%s:%d", memHogEnv, mode, size))
		cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
		out, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		if line, err := bufio.NewReader(out).ReadString('\n'); strings.TrimSpace(line) != ready {
			t.Fatalf("the %s hog said %q (%v)", mode, line, err)
		}
		return cmd
	}
	holder := hog("hold", "MEMHOG holding")
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", holder.Process.Pid))
	if err != nil {
		t.Fatal(err)
	}
	var rssKB int64
	for _, l := range strings.Split(string(status), "\n") {
		if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
			rssKB, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		}
	}
	if rssKB<<10 < size {
		t.Errorf("the hog holding %d MB is %d kB resident", size>>20, rssKB)
	}
	churner := hog("churn", "MEMHOG churning")
	time.Sleep(200 * time.Millisecond)
	// Both still at it: neither stopped by itself.
	for _, c := range []*exec.Cmd{holder, churner} {
		var info unix.Siginfo
		if err := unix.Waitid(unix.P_PID, c.Process.Pid, &info, unix.WEXITED|unix.WNOHANG|unix.WNOWAIT, nil); err != nil || info.Signo != 0 {
			t.Errorf("%v ended early (%v)", c.Env[len(c.Env)-1], err)
		}
	}
}
