package ipvs

import (
	"strconv"
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
			if r, ok := parseBenchLine(line); ok {
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

// parseBenchLine parses the guest's "BENCH install k=v ..." line.
func parseBenchLine(line string) (map[string]float64, bool) {
	_, rest, ok := strings.Cut(line, "BENCH install ")
	if !ok {
		return nil, false
	}
	r := map[string]float64{}
	for _, f := range strings.Fields(rest) {
		k, v, ok := strings.Cut(f, "=")
		if !ok {
			continue
		}
		x, err := strconv.ParseFloat(v, 64)
		if err != nil {
			continue
		}
		r[k] = x
	}
	return r, len(r) > 0
}

func TestParseBenchLine(t *testing.T) {
	r, ok := parseBenchLine("guest| BENCH install directord_ms=812.5 ipvsadm_ms=700.0 ratio=1.161 change_ops=1 change_ms=41.20 note=x")
	if !ok || r["directord_ms"] != 812.5 || r["ipvsadm_ms"] != 700 || r["ratio"] != 1.161 ||
		r["change_ops"] != 1 || r["change_ms"] != 41.2 || len(r) != 5 {
		t.Errorf("parseBenchLine = %v, %v", r, ok)
	}
	if _, ok := parseBenchLine("BENCH rep 0 directord_ms=1"); ok {
		t.Error("a per-repetition line parsed as the result")
	}
}
