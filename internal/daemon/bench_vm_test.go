package daemon

import (
	"strings"
	"testing"
	"time"

	"github.com/directord/directord/internal/vmtest"
)

// BenchmarkVMChecks boots one VM and runs BenchmarkGuestChecks in it
// (bench_guest_test.go): 1,000 TCP checks at a 1 s interval against local
// listeners, run by directord and by keepalived's checker on the same set.
// It reports each one's CPU (fraction of one core, and per probe, since
// keepalived probes less often than its delay_loop says) and resident
// memory, and directord's as ratios of keepalived's. The guest runs under qemu's
// software emulation, which inflates CPU time: compare the ratios, not the
// fractions, with other machines; the 10,000-check goal (under half a core,
// under 150 MB) is BenchmarkNetnsChecks on the host. Run it with make
// bench, or
//
//	go test -run '^$' -bench '^BenchmarkVMChecks$' -benchtime 1x ./internal/daemon
func BenchmarkVMChecks(b *testing.B) {
	var result map[string]float64
	vmtest.RunB(b, vmtest.Options{
		Run:      "^$",
		Args:     []string{"-test.bench", "^BenchmarkGuestChecks$", "-test.benchtime", "1x"},
		Binaries: []string{"./cmd/directord"},
		Timeout:  15 * time.Minute,
		MemoryMB: 2048,
		Console: func(line string) {
			if strings.Contains(line, "BENCH ") {
				b.Log(line)
			}
			if r, ok := vmtest.BenchLine(line, "checks"); ok {
				result = r
			}
		},
	})
	if result == nil {
		b.Fatal("the guest printed no BENCH checks line")
	}
	for _, m := range []struct{ key, unit string }{
		{"directord_cpu", "directord-cores"},
		{"directord_rss_mb", "directord-MB"},
		{"keepalived_cpu", "keepalived-cores"},
		{"keepalived_rss_mb", "keepalived-MB"},
		{"directord_cpu_us_per_probe", "directord-us/probe"},
		{"keepalived_cpu_us_per_probe", "keepalived-us/probe"},
		{"cpu_per_probe_ratio", "cpu-per-probe-ratio"},
		{"rss_ratio", "rss-ratio"},
	} {
		v, ok := result[m.key]
		if !ok {
			b.Fatalf("the guest's BENCH checks line has no %s", m.key)
		}
		b.ReportMetric(v, m.unit)
	}
}
