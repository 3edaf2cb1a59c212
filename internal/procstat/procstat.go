// Package procstat reads what a process tree costs from /proc: CPU time,
// resident memory, open files and threads. Benchmarks and soak tests use it
// to measure directord and the reference tools the same way.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
)

// userHZ is the unit of the CPU times in /proc/PID/stat (USER_HZ, 100 on
// every Linux architecture directord runs on).
const userHZ = 100

// Tree returns pid and its descendants, pid first.
func Tree(pid int) ([]int, error) {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil, err
	}
	children := map[int][]int{}
	for _, e := range ents {
		p, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		f, err := stat(p)
		if err != nil {
			continue // exited meanwhile
		}
		pp, err := strconv.Atoi(f[1])
		if err != nil {
			return nil, fmt.Errorf("/proc/%d/stat: ppid %q", p, f[1])
		}
		children[pp] = append(children[pp], p)
	}
	if _, err := stat(pid); err != nil {
		return nil, err
	}
	tree := []int{pid}
	for i := 0; i < len(tree); i++ {
		kids := children[tree[i]]
		slices.Sort(kids)
		tree = append(tree, kids...)
	}
	return tree, nil
}

// stat returns the fields of /proc/PID/stat after the command name: state
// is f[0], ppid f[1], utime f[11], stime f[12], num_threads f[17].
func stat(pid int) ([]string, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return nil, err
	}
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return nil, fmt.Errorf("/proc/%d/stat: no command name", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 18 {
		return nil, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f))
	}
	return f, nil
}

// CPU returns the CPU seconds (user and system) the processes have used.
func CPU(pids ...int) (float64, error) {
	user, sys, err := CPUTimes(pids...)
	return user + sys, err
}

// CPUTimes returns the CPU seconds the processes have used in user mode
// and in the kernel.
func CPUTimes(pids ...int) (user, sys float64, err error) {
	var ticks [2]int64
	for _, p := range pids {
		f, err := stat(p)
		if err != nil {
			return 0, 0, err
		}
		for i, s := range f[11:13] {
			n, err := strconv.ParseInt(s, 10, 64)
			if err != nil {
				return 0, 0, fmt.Errorf("/proc/%d/stat: cpu time %q", p, s)
			}
			ticks[i] += n
		}
	}
	return float64(ticks[0]) / userHZ, float64(ticks[1]) / userHZ, nil
}

// RSS returns the processes' resident memory in bytes (VmRSS).
func RSS(pids ...int) (int64, error) { return statusKB(pids, "VmRSS:") }

// PeakRSS returns the processes' peak resident memory in bytes (VmHWM).
func PeakRSS(pids ...int) (int64, error) { return statusKB(pids, "VmHWM:") }

func statusKB(pids []int, key string) (int64, error) {
	var total int64
	for _, p := range pids {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", p))
		if err != nil {
			return 0, err
		}
		found := false
		for _, line := range strings.Split(string(b), "\n") {
			v, ok := strings.CutPrefix(line, key)
			if !ok {
				continue
			}
			n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("/proc/%d/status: %s%s", p, key, v)
			}
			total += n << 10
			found = true
		}
		if !found {
			return 0, fmt.Errorf("/proc/%d/status: no %s", p, key)
		}
	}
	return total, nil
}

// FDs returns how many files the processes have open.
func FDs(pids ...int) (int, error) {
	n := 0
	for _, p := range pids {
		ents, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", p))
		if err != nil {
			return 0, err
		}
		n += len(ents)
	}
	return n, nil
}

// Threads returns the processes' thread count.
func Threads(pids ...int) (int, error) {
	n := 0
	for _, p := range pids {
		f, err := stat(p)
		if err != nil {
			return 0, err
		}
		t, err := strconv.Atoi(f[17])
		if err != nil {
			return 0, fmt.Errorf("/proc/%d/stat: threads %q", p, f[17])
		}
		n += t
	}
	return n, nil
}
