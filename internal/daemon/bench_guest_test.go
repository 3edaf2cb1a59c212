//go:build vmguest

package daemon

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
	"github.com/directord/directord/internal/procstat"
	"github.com/vishvananda/netlink"
)

// The health-check comparison: 1,000 TCP checks at a 1 s interval (20
// virtual services x 50 real servers) against local listeners, run by
// directord and then by keepalived's checker (-C) on the same set, each in
// its own namespace of one guest. (The 10,000-check goal is measured on the
// host, BenchmarkNetnsChecks in package healthcheck: under qemu's software
// emulation the guest cannot probe 10,000 times a second, whoever checks.) After a warm-up, each
// process tree's CPU time and resident memory are read from /proc over a
// measurement window, and the listeners count the probes that reached them,
// so a checker that stalls or stops probing cannot look cheap. One line
// that BenchmarkVMChecks (bench_vm_test.go) parses:
//
//	BENCH checks directord_cpu=… directord_rss_mb=… keepalived_cpu=… …
//
// Only documentation ranges: VIPs 203.0.113.1:1-20, real servers
// 198.51.100.11-30 x ports 10001-10050 on a dummy interface.
const (
	benchCheckServices = 20
	benchCheckReals    = 50
	benchChecks        = benchCheckServices * benchCheckReals
	benchCheckWarmup   = 20 * time.Second
	benchCheckWindow   = 30 * time.Second
)

func BenchmarkGuestChecks(b *testing.B) {
	// The listeners plus the checkers' sockets, in this process and
	// inherited by the checkers.
	lim := syscall.Rlimit{Cur: 1 << 17, Max: 1 << 17}
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim); err != nil {
		b.Fatalf("raise the file limit: %v", err)
	}
	lab := netlab.New(b)
	d := benchCheckRun(b, lab, "lb1", func(h *netlab.Host, dir string) *netlab.Proc {
		cfg := filepath.Join(dir, "directord.yaml")
		writeFile(b, cfg, benchDirectordYAML(h.Label, dir))
		return h.Start("/bin/directord", "-c", cfg)
	}, "directord running", 0.8)
	k := benchCheckRun(b, lab, "lb2", func(h *netlab.Host, dir string) *netlab.Proc {
		cfg := filepath.Join(dir, "keepalived.conf")
		writeFile(b, cfg, benchKeepalivedConf())
		return h.Start("keepalived", "-C", "-n", "-l", "-G", "-f", cfg,
			"-p", filepath.Join(dir, "keepalived.pid"), "-c", filepath.Join(dir, "checkers.pid"))
		// keepalived waits delay_loop after a probe ends before the next
		// one, and probes about every two seconds here: the comparison is
		// per probe.
	}, "", 0.25)
	dPer, kPer := d.cpu/d.probes*1e6, k.cpu/k.probes*1e6
	fmt.Printf("BENCH checks checks=%d window_s=%.0f directord_cpu=%.3f directord_rss_mb=%.1f directord_probes_per_s=%.0f directord_cpu_us_per_probe=%.0f "+
		"keepalived_cpu=%.3f keepalived_rss_mb=%.1f keepalived_probes_per_s=%.0f keepalived_cpu_us_per_probe=%.0f cpu_per_probe_ratio=%.3f rss_ratio=%.3f\n",
		benchChecks, benchCheckWindow.Seconds(), d.cpu, d.rssMB, d.probes, dPer, k.cpu, k.rssMB, k.probes, kPer, dPer/kPer, d.rssMB/k.rssMB)
}

type checkCost struct {
	cpu    float64 // fraction of one core over the window
	rssMB  float64 // resident memory of the process tree at the end
	probes float64 // connections the listeners accepted per second
}

// benchCheckRun starts a checker in a new host with the listeners, waits
// for the warm-up and measures the process tree over the window.
// minRate is the least fraction of one probe per check per second the
// listeners must see, or the checker did not do the work measured.
func benchCheckRun(b *testing.B, lab *netlab.Lab, name string, start func(*netlab.Host, string) *netlab.Proc, ready string, minRate float64) checkCost {
	b.Helper()
	h := lab.AddHost(name, "192.0.2.11/24")
	benchRealsNet(b, h)
	var accepted atomic.Int64
	for i := range benchCheckServices {
		for j := range benchCheckReals {
			addr := fmt.Sprintf("198.51.100.%d:%d", 11+i, 10001+j)
			if err := h.AcceptAndCount(addr, &accepted); err != nil {
				b.Fatal(err)
			}
		}
	}
	dir := b.TempDir()
	p := start(h, dir)
	b.Cleanup(func() {
		_ = p.Signal(syscall.SIGTERM)
		_ = p.Wait(30 * time.Second)
	})
	if ready != "" {
		deadline := time.Now().Add(time.Minute)
		for !bytes.Contains(p.Output(), []byte(ready)) {
			if time.Now().After(deadline) {
				b.Fatalf("%s not ready:\n%s", name, p.Output())
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	time.Sleep(benchCheckWarmup)
	pids, err := procstat.Tree(p.Pid())
	if err != nil {
		b.Fatalf("%s: %v\n%s", name, err, tail(p.Output(), 3000))
	}
	cpu0, err0 := procstat.CPU(pids...)
	n0, t0 := accepted.Load(), time.Now()
	time.Sleep(benchCheckWindow)
	cpu1, err1 := procstat.CPU(pids...)
	n1, t1 := accepted.Load(), time.Now()
	rss, err2 := procstat.RSS(pids...)
	if err := errors.Join(err0, err1, err2); err != nil {
		b.Fatalf("%s: %v\n%s", name, err, tail(p.Output(), 3000))
	}
	c := checkCost{
		cpu:    (cpu1 - cpu0) / t1.Sub(t0).Seconds(),
		rssMB:  float64(rss) / (1 << 20),
		probes: float64(n1-n0) / t1.Sub(t0).Seconds(),
	}
	fmt.Printf("BENCH run %s pids=%v cpu=%.3f rss_mb=%.1f probes_per_s=%.0f\n", name, pids, c.cpu, c.rssMB, c.probes)
	if c.probes < minRate*benchChecks {
		b.Fatalf("%s: the listeners saw %.0f probes/s, want at least %.0f:\n%s", name, c.probes, minRate*benchChecks, tail(p.Output(), 3000))
	}
	if err := p.Signal(syscall.SIGTERM); err != nil {
		b.Fatal(err)
	}
	_ = p.Wait(30 * time.Second)
	return c
}

// benchRealsNet adds the real servers' addresses to a dummy interface of h.
func benchRealsNet(b *testing.B, h *netlab.Host) {
	b.Helper()
	la := netlink.NewLinkAttrs()
	la.Name = "reals"
	dummy := &netlink.Dummy{LinkAttrs: la}
	if err := h.Netlink().LinkAdd(dummy); err != nil {
		b.Fatal(err)
	}
	for i := range benchCheckServices {
		addr, err := netlink.ParseAddr(fmt.Sprintf("198.51.100.%d/24", 11+i))
		if err != nil {
			b.Fatal(err)
		}
		if err := h.Netlink().AddrAdd(dummy, addr); err != nil {
			b.Fatal(err)
		}
	}
	if err := h.Netlink().LinkSetUp(dummy); err != nil {
		b.Fatal(err)
	}
}

func benchDirectordYAML(name, dir string) string {
	var s strings.Builder
	fmt.Fprintf(&s, "node: {name: %s, state_dir: %s, control_socket: %s/ctl.sock, log: {level: info}}\nipvs:\n  virtual_services:\n", name, dir, dir)
	for i := range benchCheckServices {
		fmt.Fprintf(&s, "    - name: s%d\n      address: 203.0.113.1:%d\n      forwarding: nat\n      check: {type: tcp, interval: 1s, timeout: 1s}\n      real_servers:\n", i, i+1)
		for j := range benchCheckReals {
			fmt.Fprintf(&s, "        - {address: \"198.51.100.%d:%d\"}\n", 11+i, 10001+j)
		}
	}
	return s.String()
}

func benchKeepalivedConf() string {
	var s strings.Builder
	s.WriteString("global_defs {\n  router_id bench\n}\n")
	for i := range benchCheckServices {
		fmt.Fprintf(&s, "virtual_server 203.0.113.1 %d {\n  delay_loop 1\n  lb_algo wlc\n  lb_kind NAT\n  protocol TCP\n", i+1)
		for j := range benchCheckReals {
			fmt.Fprintf(&s, "  real_server 198.51.100.%d %d {\n    weight 1\n    TCP_CHECK {\n      connect_timeout 1\n      retry 2\n    }\n  }\n", 11+i, 10001+j)
		}
		s.WriteString("}\n")
	}
	return s.String()
}

func writeFile(b *testing.B, path, s string) {
	b.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		b.Fatal(err)
	}
}

func tail(b []byte, n int) string {
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}
