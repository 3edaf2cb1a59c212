package e2e

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"text/tabwriter"
	"time"

	"github.com/directord/directord/internal/vmtest"
)

var binaries = []string{"./cmd/directord", "./cmd/directorctl"}

// TestVM boots the lab's guest once: the demo and the short drill set
// (TestGuestDrillCI). With DIRECTORD_E2E=demo (make demo) it runs the
// demo alone and prints it on stdout.
func TestVM(t *testing.T) {
	o := vmtest.Options{Run: "^TestGuest(Demo|DrillCI)$", Binaries: binaries, Timeout: 8 * time.Minute}
	var rows []string
	demo := os.Getenv("DIRECTORD_E2E") == "demo"
	if demo {
		o.Run = "^TestGuestDemo$"
	}
	o.Console = func(line string) {
		if i := strings.Index(line, "DEMO| "); i >= 0 && demo {
			fmt.Println(line[i+len("DEMO| "):])
		}
		if i := strings.Index(line, "DRILL-ROW\t"); i >= 0 {
			rows = append(rows, line[i:])
		}
	}
	vmtest.Run(t, o)
	if len(rows) > 0 {
		var b strings.Builder
		printTable(&b, rows)
		t.Log("drills:\n" + b.String())
	}
}

// BenchmarkVMDrill (make drill) runs every drill scenario with directord
// and with keepalived in one VM boot and prints the table.
// DIRECTORD_E2E_SCENARIOS and DIRECTORD_E2E_IMPLS narrow the run.
func BenchmarkVMDrill(b *testing.B) {
	var rows []string
	var env []string
	for _, k := range []string{"DIRECTORD_E2E_SCENARIOS", "DIRECTORD_E2E_IMPLS"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	start := time.Now()
	vmtest.RunB(b, vmtest.Options{Run: "^TestGuestDrillAll$", Binaries: binaries, Env: env, Timeout: 25 * time.Minute,
		Console: func(line string) {
			if i := strings.Index(line, "DRILL-ROW\t"); i >= 0 {
				rows = append(rows, line[i:])
			}
			if strings.Contains(line, "--- FAIL") || strings.Contains(line, "drill_guest_test.go") || strings.Contains(line, "lab_guest_test.go") {
				fmt.Println("guest|", line)
			}
		}})
	if len(rows) == 0 {
		b.Fatal("the guest reported no drill")
	}
	fmt.Printf("\nDrills under load (new connection every %v, %d long-lived connections), in the VM (qemu TCG), %v:\n\n",
		10*time.Millisecond, 50, time.Since(start).Round(time.Second))
	printTable(os.Stdout, rows)
}

// BenchmarkVMResync runs TestGuestResyncUnderAdverts in the VM: a
// directord pair at fast adverts with 200 virtual services x 10 real
// servers each and busy processes on the guest's CPUs, quiet for a
// stretch, then with both IPVS tables flushed
// every second so that each re-sync installs them again; it reports the
// adverts the backup sent while the master lived in each stretch.
// DIRECTORD_E2E_ADVERT (10ms), DIRECTORD_E2E_STRETCH (30s) and
// DIRECTORD_E2E_BUSY (busy-looping processes in the guest, 4) change the
// run.
func BenchmarkVMResync(b *testing.B) {
	var env []string
	for _, k := range []string{"DIRECTORD_E2E_ADVERT", "DIRECTORD_E2E_STRETCH", "DIRECTORD_E2E_BUSY"} {
		if v := os.Getenv(k); v != "" {
			env = append(env, k+"="+v)
		}
	}
	var r map[string]float64
	var line string
	vmtest.RunB(b, vmtest.Options{Run: "^TestGuestResyncUnderAdverts$", Binaries: binaries, Env: env, Timeout: 10 * time.Minute,
		Console: func(l string) {
			if v, ok := vmtest.BenchLine(l, "resync"); ok {
				r, line = v, l
			}
			if strings.Contains(l, "--- FAIL") || strings.Contains(l, "resync_guest_test.go") {
				fmt.Println("guest|", l)
			}
		}})
	if r == nil {
		b.Fatal("the guest printed no BENCH resync line")
	}
	b.Log(line)
	for _, m := range []struct{ key, unit string }{
		{"quiet_backup", "quiet-backup-adverts"},
		{"resync_backup", "resync-backup-adverts"},
		{"quiet_gap_ms", "quiet-master-gap-ms"},
		{"resync_gap_ms", "resync-master-gap-ms"},
		{"services_installed", "services-installed"},
	} {
		v, ok := r[m.key]
		if !ok {
			b.Fatalf("the guest's BENCH resync line has no %s", m.key)
		}
		b.ReportMetric(v, m.unit)
	}
	b.ReportMetric(0, "ns/op")
	fmt.Printf("\nAdverts from the backup while the master lives, VM (qemu TCG), %g ms adverts, %g virtual services x %g real servers on each director, %g busy processes:\n"+
		"  quiet, %g s:      %g backup adverts, %g master adverts, longest master gap %g ms\n"+
		"  re-syncing, %g s: %g backup adverts, %g master adverts, longest master gap %g ms (both tables flushed %g times: %g services, %g real servers installed again)\n",
		r["advert_ms"], r["services"], r["reals"], r["busy_procs"],
		r["quiet_s"], r["quiet_backup"], r["quiet_master"], r["quiet_gap_ms"],
		r["resync_s"], r["resync_backup"], r["resync_master"], r["resync_gap_ms"], r["flushes"], r["services_installed"], r["reals_installed"])
}

// printTable prints the guest's DRILL-ROW lines as the drill table.
func printTable(w io.Writer, rows []string) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "IMPL\t#\tSCENARIO\tOUTAGE ms\tFAILED NEW\tBROKEN LONG\tTRANSITIONS\tLEAKED VIPS\tGUEST STALL ms")
	var notes []string
	for _, r := range rows {
		f := strings.Split(r, "\t")
		if len(f) < 13 {
			continue
		}
		impl, id, name, outage, failed, attempts, broken, brokenDead, trans, leaked, stall, note := f[1], f[2], f[3], f[4], f[5], f[6], f[7], f[8], f[9], f[10], f[11], f[12]
		if brokenDead != "0" {
			broken += " (+" + brokenDead + " on stopped servers)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s/%s\t%s\t%s\t%s\t%s\n", impl, id, name, outage, failed, attempts, broken, trans, leaked, stall)
		if n := strings.Trim(note, " |"); n != "" {
			notes = append(notes, fmt.Sprintf("  %s %s: %s", impl, id, n))
		}
	}
	tw.Flush()
	if len(notes) > 0 {
		fmt.Fprintln(w, "\nnotes (leaked VIPs | drill notes | why new connections failed | why long-lived ones broke):")
		fmt.Fprintln(w, strings.Join(notes, "\n"))
	}
}

// BenchmarkVMSoak (make soak) runs the soak: DIRECTORD_E2E_SOAK failovers
// (default 200), alternating directorctl drill and SIGKILL, and prints
// what the surviving director holds before and after.
func BenchmarkVMSoak(b *testing.B) {
	var env []string
	if v := os.Getenv("DIRECTORD_E2E_SOAK"); v != "" {
		env = append(env, "DIRECTORD_E2E_SOAK="+v)
	}
	var soak string
	vmtest.RunB(b, vmtest.Options{Run: "^TestGuestSoak$", Binaries: binaries, Env: env, Timeout: 60 * time.Minute,
		Console: func(line string) {
			if i := strings.Index(line, "SOAK "); i >= 0 {
				soak = line[i:]
			}
			if strings.Contains(line, "soak_guest_test.go") || strings.Contains(line, "--- FAIL") {
				fmt.Println("guest|", line)
			}
		}})
	if soak == "" {
		b.Fatal("the guest reported no soak result")
	}
	fmt.Println(soak)
}
