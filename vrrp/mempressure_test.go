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
// killed. It volunteers first for the OOM killer.
func memHog(spec string) error {
	mode, size, ok := strings.Cut(spec, ":")
	n, err := strconv.ParseInt(size, 10, 64)
	if !ok || err != nil || n <= 0 {
		return fmt.Errorf("%s=%q: want hold:BYTES or churn:BYTES", memHogEnv, spec)
	}
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
		select {}
	case "churn":
		fmt.Println("MEMHOG churning")
		for {
			b, err := mapTouch()
			if err != nil {
				return err
			}
			if err := unix.Munmap(b); err != nil {
				return err
			}
		}
	}
	return fmt.Errorf("%s=%q: unknown mode %q", memHogEnv, spec, mode)
}

// memAvailable is /proc/meminfo's MemAvailable in bytes.
func memAvailable() (int64, error) {
	f, err := os.Open("/proc/meminfo")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "MemAvailable:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/meminfo: %q: %w", sc.Text(), err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/meminfo: no MemAvailable")
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
	file := filepath.Join(t.TempDir(), "pagecache")
	if out, err := exec.Command("dd", "if=/dev/zero", "of="+file, "bs=1M", fmt.Sprintf("count=%d", memFile>>20), "status=none").CombinedOutput(); err != nil {
		t.Fatalf("write %s: %v: %s", file, err, out)
	}
	avail, err := memAvailable()
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
		cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
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
	start(exec.Command("sh", "-c", "while :; do cat "+file+" > /dev/null; done"), "page-cache reader", "")
	t.Logf("memory pressure: %d MB held, %d MB churned, a %d MB file read in a loop, %d MB were available",
		hold>>20, memChurn>>20, memFile>>20, avail>>20)
	return func() error {
		for _, p := range procs {
			var ws syscall.WaitStatus
			if pid, _ := syscall.Wait4(p.cmd.Process.Pid, &ws, syscall.WNOHANG, nil); pid == p.cmd.Process.Pid {
				return fmt.Errorf("the %s ended: %v", p.what, ws)
			}
		}
		return nil
	}
}

func TestMemHogHoldsAndChurns(t *testing.T) {
	if err := memHog("hold"); err == nil {
		t.Error("a spec without a size was accepted")
	}
	if err := memHog("grab:4096"); err == nil {
		t.Error("an unknown mode was accepted")
	}
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	const size = 64 << 20
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), fmt.Sprintf("%s=hold:%d", memHogEnv, size))
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = cmd.Process.Kill(); _ = cmd.Wait() }()
	if line, err := bufio.NewReader(out).ReadString('\n'); strings.TrimSpace(line) != "MEMHOG holding" {
		t.Fatalf("the hog said %q (%v)", line, err)
	}
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", cmd.Process.Pid))
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
}
