package procstat

import (
	"os"
	"os/exec"
	"slices"
	"testing"
	"time"
)

func TestTreeFindsChildrenAndCountsTheirCost(t *testing.T) {
	// A shell that runs a busy child for a moment, then waits in sleep.
	cmd := exec.Command("/bin/sh", "-c", "i=0; while [ $i -lt 20000 ]; do i=$((i+1)); done; sleep 30 & wait")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	var tree []int
	deadline := time.Now().Add(10 * time.Second)
	for {
		var err error
		if tree, err = Tree(cmd.Process.Pid); err != nil {
			t.Fatal(err)
		}
		if len(tree) == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Tree(%d) = %v, want the shell and its sleep", cmd.Process.Pid, tree)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if tree[0] != cmd.Process.Pid {
		t.Errorf("Tree starts with %d, want %d", tree[0], cmd.Process.Pid)
	}
	cpu, err := CPU(tree...)
	if err != nil || cpu <= 0 {
		t.Errorf("CPU = %v, %v; the shell counted to 20,000", cpu, err)
	}
	rss, err := RSS(tree...)
	if err != nil || rss < 100<<10 || rss > 1<<30 {
		t.Errorf("RSS = %d, %v", rss, err)
	}
	peak, err := PeakRSS(tree...)
	if err != nil || peak < rss {
		t.Errorf("PeakRSS = %d, %v; RSS %d", peak, err, rss)
	}
	n, err := FDs(tree...)
	if err != nil || n < 3 {
		t.Errorf("FDs = %d, %v", n, err)
	}
	th, err := Threads(tree...)
	if err != nil || th != 2 {
		t.Errorf("Threads = %d, %v; want one per process", th, err)
	}
}

func TestSelf(t *testing.T) {
	pid := os.Getpid()
	before, err := FDs(pid)
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open("/proc/self/stat")
	if err != nil {
		t.Fatal(err)
	}
	after, err := FDs(pid)
	f.Close()
	if err != nil || after != before+1 {
		t.Errorf("FDs after opening a file = %d, %v; before %d", after, err, before)
	}
	if _, err := Tree(1 << 30); err == nil {
		t.Error("Tree of a pid that does not exist succeeded")
	}
	if tree, err := Tree(pid); err != nil || !slices.Contains(tree, pid) {
		t.Errorf("Tree(self) = %v, %v", tree, err)
	}
}
