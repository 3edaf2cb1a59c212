package ipvs

import (
	"strings"
	"testing"
	"time"

	"github.com/directord/directord/internal/vmtest"
)

// BenchmarkVMInstall boots one VM and runs BenchmarkGuestInstall in it
// (bench_guest_test.go): 1,000 virtual services x 10 real servers
// installed from empty by directord and by `ipvsadm -R`, medians of three
// alternating runs each, then one weight change on top of that table. It
// reports the guest's numbers; the goal is ratio <= 1.5 and a change of one
// operation taking milliseconds. Times are under qemu's software emulation:
// compare the ratio, not the milliseconds, with other machines. Run it with
// make bench, or
//
//	go test -run '^$' -bench '^BenchmarkVMInstall$' -benchtime 1x ./ipvs
func BenchmarkVMInstall(b *testing.B) {
	var result map[string]float64
	vmtest.RunB(b, vmtest.Options{
		Run:     "^$",
		Args:    []string{"-test.bench", "^BenchmarkGuestInstall$", "-test.benchtime", "1x"},
		Timeout: 15 * time.Minute,
		Console: func(line string) {
			if strings.HasPrefix(line, "BENCH ") {
				b.Log(line)
			}
			if r, ok := vmtest.BenchLine(line, "install"); ok {
				result = r
			}
		},
	})
	if result == nil {
		b.Fatal("the guest printed no BENCH install line")
	}
	for _, m := range []struct{ key, unit string }{
		{"directord_ms", "directord-ms"},
		{"ipvsadm_ms", "ipvsadm-ms"},
		{"ratio", "ratio"},
		{"change_ops", "change-ops"},
		{"change_ms", "change-ms"},
	} {
		v, ok := result[m.key]
		if !ok {
			b.Fatalf("the guest's BENCH install line has no %s", m.key)
		}
		b.ReportMetric(v, m.unit)
	}
}
