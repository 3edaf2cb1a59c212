//go:build vmguest

package ipvs

import (
	"bytes"
	"fmt"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/internal/netlab"
	"github.com/vishvananda/netlink"
)

// The install benchmark of the issue: 1,000 TCP virtual services with 10
// real servers each, installed from an empty table by directord
// (Manager.Apply of Desired(cfg, nil)) and by `ipvsadm -R` fed the same
// rules, alternating, three times each, in one namespace of one guest; then
// one real server's weight changed on top of the full table. It reports
// medians on one line that BenchmarkVMInstall (bench_vm_test.go) parses:
//
//	BENCH install directord_ms=… ipvsadm_ms=… ratio=… change_ops=1 change_ms=… …
//
// Only documentation ranges: VIPs 203.0.113.1-4 x ports 1000-1249, real
// servers 192.0.2.11-20:8080, routable through a dummy interface.
const (
	benchVIPs     = 4
	benchPorts    = 250
	benchReals    = 10
	benchServices = benchVIPs * benchPorts
	benchReps     = 3
)

func BenchmarkGuestInstall(b *testing.B) {
	if err := KernelAvailable(); err != nil {
		b.Fatalf("the VM kernel must provide IPVS: %v", err)
	}
	lab := netlab.New(b)
	h := lab.AddHost("lb")
	la := netlink.NewLinkAttrs()
	la.Name = "reals"
	dummy := &netlink.Dummy{LinkAttrs: la}
	if err := h.Netlink().LinkAdd(dummy); err != nil {
		b.Fatalf("add dummy: %v", err)
	}
	addr, err := netlink.ParseAddr("192.0.2.1/24")
	if err != nil {
		b.Fatal(err)
	}
	if err := h.Netlink().AddrAdd(dummy, addr); err != nil {
		b.Fatal(err)
	}
	if err := h.Netlink().LinkSetUp(dummy); err != nil {
		b.Fatal(err)
	}
	var nk *NetlinkKernel
	if err := h.Do(func() (err error) { nk, err = NewKernel(); return err }); err != nil {
		b.Fatalf("NewKernel: %v", err)
	}
	b.Cleanup(func() { nk.Close() })
	k := &benchKernel{Kernel: nk}

	cfg, err := config.Parse("bench.yaml", benchYAML())
	if err != nil {
		b.Fatal(err)
	}
	table := Desired(cfg, nil)
	if n := len(table.Services); n != benchServices {
		b.Fatalf("desired table has %d services, want %d", n, benchServices)
	}
	rules := benchIpvsadmRules(b, table)
	ipvsadmPath, err := netlab.LookPath("ipvsadm")
	if err != nil {
		b.Fatal(err)
	}
	// ipvsadm is started from a thread inside the namespace (no `ip netns
	// exec` in between), so its time is its own.
	ipvsadm := func(stdin []byte, args ...string) (time.Duration, string) {
		b.Helper()
		var out bytes.Buffer
		cmd := exec.Command(ipvsadmPath, args...)
		cmd.Stdin = bytes.NewReader(stdin)
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		if err := h.Do(cmd.Start); err != nil {
			b.Fatalf("ipvsadm %q: %v", args, err)
		}
		err := cmd.Wait()
		d := time.Since(start)
		if err != nil {
			b.Fatalf("ipvsadm %q: %v\n%s", args, err, out.String())
		}
		return d, out.String()
	}
	check := func(who string) string {
		b.Helper()
		_, list := ipvsadm(nil, "-Ln")
		svcs, reals := countIpvsadmList(list)
		if svcs != benchServices || reals != benchServices*benchReals {
			b.Fatalf("after %s: ipvsadm -Ln lists %d services and %d real servers, want %d and %d",
				who, svcs, reals, benchServices, benchServices*benchReals)
		}
		_, save := ipvsadm(nil, "-S", "-n")
		lines := strings.Split(strings.TrimSpace(save), "\n")
		slices.Sort(lines)
		return strings.Join(lines, "\n")
	}
	flush := func() {
		b.Helper()
		ipvsadm(nil, "-C")
		if _, list := ipvsadm(nil, "-Ln"); strings.Contains(list, "TCP ") {
			b.Fatalf("ipvsadm -C left services:\n%s", list)
		}
	}

	var startup []time.Duration
	for range benchReps {
		d, _ := ipvsadm(nil, "-R") // empty input: ipvsadm's start-up cost
		startup = append(startup, d)
	}

	var dir, adm, dirRead, dirWrite []time.Duration
	var dirSave, admSave string
	var m *Manager
	for rep := range benchReps {
		// directord
		flush()
		m, err = NewManager(k, filepath.Join(b.TempDir(), fmt.Sprint(rep)), nil)
		if err != nil {
			b.Fatal(err)
		}
		k.reset()
		start := time.Now()
		res, err := m.Apply(table)
		d := time.Since(start)
		if err != nil {
			b.Fatalf("directord install: %v", err)
		}
		if n := len(res.Applied); n != benchServices*(1+benchReals) {
			b.Fatalf("directord install: %d operations, want %d", n, benchServices*(1+benchReals))
		}
		dir = append(dir, d)
		dirRead = append(dirRead, k.read)
		dirWrite = append(dirWrite, k.write)
		dirSave = check("directord")

		// ipvsadm -R
		flush()
		d, _ = ipvsadm(rules, "-R")
		adm = append(adm, d)
		admSave = check("ipvsadm -R")
		if admSave != dirSave {
			b.Fatalf("ipvsadm -S -n differs between directord's install and ipvsadm -R's:\ndirectord:\n%.2000s\nipvsadm:\n%.2000s", dirSave, admSave)
		}
		fmt.Printf("BENCH rep %d directord_ms=%.1f (read %.1f, ops %.1f) ipvsadm_ms=%.1f\n",
			rep, ms(dir[rep]), ms(dirRead[rep]), ms(dirWrite[rep]), ms(adm[rep]))
	}

	// One change on top of the full table, installed by directord.
	flush()
	m, err = NewManager(k, filepath.Join(b.TempDir(), "change"), nil)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := m.Apply(table); err != nil {
		b.Fatalf("directord install before the change: %v", err)
	}
	changed := cloneTable(table)
	svc := &changed.Services[617]
	svc.Destinations[4].Weight = 7
	k.reset()
	start := time.Now()
	res, err := m.Apply(changed)
	change := time.Since(start)
	if err != nil {
		b.Fatalf("directord change: %v", err)
	}
	if len(res.Applied) != 1 || res.Applied[0].Kind != UpdateDest {
		b.Fatalf("changing one weight took %d operations, want one UpdateDest: %v", len(res.Applied), res.Applied)
	}
	vip := svc.Service.Key
	_, list := ipvsadm(nil, "-Ln", "-t", fmt.Sprintf("%s:%d", vip.Address, vip.Port))
	want := fmt.Sprintf("%s:%d", svc.Destinations[4].Key.Address, svc.Destinations[4].Key.Port)
	if !slices.ContainsFunc(strings.Split(list, "\n"), func(l string) bool {
		f := strings.Fields(l)
		return len(f) >= 4 && f[1] == want && f[3] == "7"
	}) {
		b.Fatalf("after the change ipvsadm -Ln does not show %s at weight 7:\n%s", want, list)
	}

	// Where the time goes, outside the kernel calls timed by benchKernel:
	// the planning, the log arguments the Manager builds for each
	// operation (even for a discarding logger), the state file, and
	// reading the full table compared with ipvsadm -Ln.
	start = time.Now()
	ops := Plan(table, nil, nil)
	plan := time.Since(start)
	start = time.Now()
	for _, op := range ops {
		_ = opAttrs(op)
	}
	logArgs := time.Since(start)
	keys := make([]ServiceKey, 0, len(table.Services))
	for _, ds := range table.Services {
		keys = append(keys, ds.Service.Key)
	}
	start = time.Now()
	if err := writeState(b.TempDir(), keys); err != nil {
		b.Fatal(err)
	}
	state := time.Since(start)
	var reads, lists []time.Duration
	for range benchReps {
		start = time.Now()
		if _, err := nk.Services(); err != nil {
			b.Fatal(err)
		}
		reads = append(reads, time.Since(start))
		d, _ := ipvsadm(nil, "-Ln")
		lists = append(lists, d)
	}
	fmt.Printf("BENCH profile plan_ms=%.1f log_args_ms=%.1f state_file_ms=%.1f services_read_ms=%.1f ipvsadm_list_ms=%.1f\n",
		ms(plan), ms(logArgs), ms(state), ms(median(reads)), ms(median(lists)))

	dm, am := median(dir), median(adm)
	ratio := float64(dm) / float64(am)
	fmt.Printf("BENCH install directord_ms=%.1f ipvsadm_ms=%.1f ratio=%.3f change_ops=%d change_ms=%.2f"+
		" directord_read_ms=%.1f directord_ops_ms=%.1f ipvsadm_startup_ms=%.1f change_read_ms=%.2f change_op_ms=%.3f\n",
		ms(dm), ms(am), ratio, len(res.Applied), ms(change),
		ms(median(dirRead)), ms(median(dirWrite)), ms(median(startup)), ms(k.read), ms(k.write))
	b.ReportMetric(ms(dm), "directord-ms")
	b.ReportMetric(ms(am), "ipvsadm-ms")
	b.ReportMetric(ratio, "ratio")
	b.ReportMetric(float64(len(res.Applied)), "change-ops")
	b.ReportMetric(ms(change), "change-ms")
}

// benchYAML is the configuration of the benchmark's table.
func benchYAML() []byte {
	var y strings.Builder
	y.WriteString("ipvs:\n  virtual_services:\n")
	for v := range benchVIPs {
		for p := range benchPorts {
			fmt.Fprintf(&y, "    - {name: s%d-%d, address: \"203.0.113.%d:%d\", scheduler: wrr, forwarding: nat, real_servers: [",
				v+1, 1000+p, v+1, 1000+p)
			for r := range benchReals {
				if r > 0 {
					y.WriteString(", ")
				}
				fmt.Fprintf(&y, "{address: \"192.0.2.%d:8080\", weight: %d}", 11+r, 1+r%3)
			}
			y.WriteString("]}\n")
		}
	}
	return []byte(y.String())
}

// benchIpvsadmRules writes table as ipvsadm -R input (-A and -a lines).
func benchIpvsadmRules(b *testing.B, table Table) []byte {
	var r bytes.Buffer
	for _, ds := range table.Services {
		s := ds.Service
		if s.Key.Protocol != TCP || s.Flags != 0 || s.Timeout != 0 {
			b.Fatalf("benchmark service %s is not a plain TCP service", s.Key)
		}
		fmt.Fprintf(&r, "-A -t %s:%d -s %s\n", s.Key.Address, s.Key.Port, s.Scheduler)
		for _, d := range ds.Destinations {
			if d.Forward != Masq || d.UpperThreshold != 0 || d.LowerThreshold != 0 {
				b.Fatalf("benchmark real server %s is not a plain NAT one", d.Key)
			}
			fmt.Fprintf(&r, "-a -t %s:%d -r %s:%d -m -w %d\n", s.Key.Address, s.Key.Port, d.Key.Address, d.Key.Port, d.Weight)
		}
	}
	return r.Bytes()
}

// countIpvsadmList counts the services and real servers of ipvsadm -Ln.
func countIpvsadmList(list string) (svcs, reals int) {
	for _, l := range strings.Split(list, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 0:
		case f[0] == "TCP" || f[0] == "UDP" || f[0] == "SCTP" || f[0] == "FWM":
			svcs++
		case f[0] == "->" && len(f) > 1 && f[1] != "RemoteAddress:Port":
			reals++
		}
	}
	return svcs, reals
}

// benchKernel times a Kernel's reads (Services) and writes (everything
// else the Manager calls) since the last reset.
type benchKernel struct {
	Kernel
	mu          sync.Mutex
	read, write time.Duration
}

func (k *benchKernel) reset() { k.mu.Lock(); k.read, k.write = 0, 0; k.mu.Unlock() }

func (k *benchKernel) timed(d *time.Duration, start time.Time) {
	k.mu.Lock()
	*d += time.Since(start)
	k.mu.Unlock()
}

func (k *benchKernel) Services() ([]Entry, error) {
	defer k.timed(&k.read, time.Now())
	return k.Kernel.Services()
}

func (k *benchKernel) NewService(s Service) error {
	defer k.timed(&k.write, time.Now())
	return k.Kernel.NewService(s)
}

func (k *benchKernel) UpdateService(s Service) error {
	defer k.timed(&k.write, time.Now())
	return k.Kernel.UpdateService(s)
}

func (k *benchKernel) DelService(key ServiceKey) error {
	defer k.timed(&k.write, time.Now())
	return k.Kernel.DelService(key)
}

func (k *benchKernel) NewDestination(key ServiceKey, d Destination) error {
	defer k.timed(&k.write, time.Now())
	return k.Kernel.NewDestination(key, d)
}

func (k *benchKernel) UpdateDestination(key ServiceKey, d Destination) error {
	defer k.timed(&k.write, time.Now())
	return k.Kernel.UpdateDestination(key, d)
}

func (k *benchKernel) DelDestination(key ServiceKey, dk DestKey) error {
	defer k.timed(&k.write, time.Now())
	return k.Kernel.DelDestination(key, dk)
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
