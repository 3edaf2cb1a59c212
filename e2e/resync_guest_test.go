//go:build vmguest

package e2e

import (
	"bytes"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
)

// Fast adverts while IPVS re-syncs: a pair of directord at 10 ms adverts
// (DIRECTORD_E2E_ADVERT), each holding resyncServices virtual services of
// resyncReals real servers (no health checks), with ipvs.resync_interval
// 1s. For a first stretch nothing else happens; for a second, both
// directors' IPVS tables are flushed behind their back again and again (a
// second apart, plus the flushes' own time), so that each re-sync finds
// the table gone and installs it again (resyncServices x (1 +
// resyncReals) netlink operations, each logged as a repaired drift).
// tcpdump in the switch namespace counts the adverts the backup sends
// while the master lives, in each stretch. Busy-looping processes, two per
// guest CPU (DIRECTORD_E2E_BUSY), run through both stretches; many more
// starve the emulated guest as a whole (with 24, the quiet stretch alone
// had a 324 ms gap in the master's adverts, its kernel timers included).
// It asserts that the capture saw the master, that the re-syncs did their
// work and that both tables are whole again after; the counts are the
// benchmark's (BenchmarkVMResync).
const (
	resyncServices = 200
	resyncReals    = 10
)

var resyncAdvertLine = regexp.MustCompile(`^(\d+)\.(\d{6}) IP (\S+) > \S+ VRRPv\d, Advertisement`)

func TestGuestResyncUnderAdverts(t *testing.T) {
	advert := 10 * time.Millisecond
	if v := os.Getenv("DIRECTORD_E2E_ADVERT"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("DIRECTORD_E2E_ADVERT=%q: %v", v, err)
		}
		advert = d
	}
	busyProcs := 4 // two per guest CPU
	if v := os.Getenv("DIRECTORD_E2E_BUSY"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			t.Fatalf("DIRECTORD_E2E_BUSY=%q: want a number of processes", v)
		}
		busyProcs = n
	}
	stretch := 30 * time.Second
	if v := os.Getenv("DIRECTORD_E2E_STRETCH"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("DIRECTORD_E2E_STRETCH=%q: %v", v, err)
		}
		stretch = d
	}
	nl := netlab.New(t)
	var hosts [2]*netlab.Host
	var procs [2]*netlab.Proc
	for i := range hosts {
		hosts[i] = nl.AddHost(fmt.Sprintf("lb%d", i+1), fmt.Sprintf("192.0.2.%d/24", 11+i))
	}
	// Started backup first, so that lb1 becomes master by preemption,
	// not by both starting as masters.
	for _, i := range []int{1, 0} {
		dir := t.TempDir()
		cfg := filepath.Join(dir, "directord.yaml")
		if err := os.WriteFile(cfg, []byte(resyncConfig(fmt.Sprintf("lb%d", i+1), dir, 150-50*i, advert)), 0o644); err != nil {
			t.Fatal(err)
		}
		procs[i] = hosts[i].Start(filepath.Join(binDir(), "directord"), "-c", cfg)
	}
	for i, st := range []string{"to=MASTER", "to=BACKUP"} {
		if !waitUntil(func() bool { return strings.Contains(string(procs[i].Output()), st) }, 30*time.Second) {
			t.Fatalf("lb%d: no %q within 30s:\n%s", i+1, st, procs[i].Output())
		}
	}
	// Both tables installed before the stretches begin.
	for _, h := range hosts {
		if svcs, reals, ok := resyncWhole(t, h, 60*time.Second); !ok {
			t.Fatalf("%s: %d virtual services and %d real servers installed after 60s, want %d and %d", h.Label, svcs, reals, resyncServices, resyncServices*resyncReals)
		}
	}
	time.Sleep(2 * time.Second)

	netlab.Busy(t, busyProcs)
	capture := exec.Command("ip", "netns", "exec", nl.Switch, "tcpdump", "-i", nl.LAN.Bridge, "-n", "-tt", "-l", "--immediate-mode", "ip proto 112")
	var out, errb bytes.Buffer
	capture.Stdout, capture.Stderr = &out, &errb
	if err := capture.Start(); err != nil {
		t.Fatalf("tcpdump: %v", err)
	}
	defer func() { capture.Process.Kill(); capture.Wait() }()
	time.Sleep(time.Second)
	quietFrom := time.Now()
	time.Sleep(stretch)
	resyncFrom := time.Now()
	repairs := func() (services, reals int) {
		for _, p := range procs {
			for _, l := range strings.Split(string(p.Output()), "\n") {
				if strings.Contains(l, "IPVS drift repaired") {
					switch {
					case strings.Contains(l, `op="add service `):
						services++
					case strings.Contains(l, `op="add destination `):
						reals++
					}
				}
			}
		}
		return services, reals
	}
	services0, reals0 := repairs()
	flushes := 0
	for time.Since(resyncFrom) < stretch {
		for _, h := range hosts {
			if _, err := h.Run(t.Context(), "ipvsadm", "-C"); err != nil {
				t.Fatalf("%s: ipvsadm -C: %v", h.Label, err)
			}
		}
		flushes++
		time.Sleep(time.Second)
	}
	end := time.Now()
	time.Sleep(time.Second)
	capture.Process.Signal(syscall.SIGINT)
	capture.Wait()
	// Both tables whole again, a re-sync later.
	for _, h := range hosts {
		if svcs, reals, ok := resyncWhole(t, h, 5*time.Second); !ok {
			kinds := map[string]int{}
			msgRe := regexp.MustCompile(`msg="([^"]+)" op="(\w+ \w+)`)
			for i, p := range procs {
				for _, l := range strings.Split(string(p.Output()), "\n") {
					if m := msgRe.FindStringSubmatch(l); m != nil {
						kinds[fmt.Sprintf("lb%d %s: %s", i+1, m[1], m[2])]++
					}
				}
			}
			var logged []string
			for k, n := range kinds {
				logged = append(logged, fmt.Sprintf("%s x%d", k, n))
			}
			sort.Strings(logged)
			t.Errorf("%s: %d virtual services and %d real servers 5s after the last flush, want %d and %d; IPVS operations logged:\n%s",
				h.Label, svcs, reals, resyncServices, resyncServices*resyncReals, strings.Join(logged, "\n"))
		}
	}
	services1, reals1 := repairs()
	svcRepairs, realRepairs := services1-services0, reals1-reals0

	lb1, lb2 := netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("192.0.2.12")
	type stats struct {
		master, backup int
		gap            time.Duration
	}
	var quiet, resyncing stats
	var last time.Time
	for _, l := range strings.Split(out.String(), "\n") {
		m := resyncAdvertLine.FindStringSubmatch(l)
		if m == nil {
			continue
		}
		sec, _ := strconv.ParseInt(m[1], 10, 64)
		usec, _ := strconv.ParseInt(m[2], 10, 64)
		at := time.Unix(sec, usec*1000)
		src, err := netip.ParseAddr(m[3])
		if err != nil {
			continue
		}
		var s *stats
		switch {
		case !at.Before(quietFrom) && at.Before(resyncFrom):
			s = &quiet
		case !at.Before(resyncFrom) && at.Before(end):
			s = &resyncing
		default:
			continue
		}
		switch src {
		case lb1:
			if !last.IsZero() {
				s.gap = max(s.gap, at.Sub(last))
			}
			last = at
			s.master++
		case lb2:
			s.backup++
		}
	}
	late := func(p *netlab.Proc) string {
		most := "0s"
		for _, l := range strings.Split(string(p.Output()), "\n") {
			if strings.Contains(l, "VRRP timer late") {
				if i := strings.Index(l, "late="); i >= 0 {
					most = strings.Fields(l[i+len("late="):])[0]
				}
			}
		}
		return most
	}
	resyncSpan := end.Sub(resyncFrom)
	t.Logf("quiet %v: master %d adverts, backup %d, longest master gap %v; re-syncing %v: master %d, backup %d, longest gap %v, %d flushes, %d services and %d real servers installed again",
		stretch, quiet.master, quiet.backup, quiet.gap, resyncSpan.Round(time.Millisecond), resyncing.master, resyncing.backup, resyncing.gap, flushes, svcRepairs, realRepairs)
	fmt.Printf("BENCH resync busy_procs=%d advert_ms=%g services=%d reals=%d quiet_s=%g resync_s=%.1f quiet_master=%d quiet_backup=%d quiet_gap_ms=%.1f resync_master=%d resync_backup=%d resync_gap_ms=%.1f flushes=%d services_installed=%d reals_installed=%d lb1_late=%s lb2_late=%s\n",
		busyProcs, float64(advert)/float64(time.Millisecond), resyncServices, resyncReals, stretch.Seconds(), resyncSpan.Seconds(),
		quiet.master, quiet.backup, float64(quiet.gap)/float64(time.Millisecond),
		resyncing.master, resyncing.backup, float64(resyncing.gap)/float64(time.Millisecond), flushes, svcRepairs, realRepairs, late(procs[0]), late(procs[1]))
	if quiet.master < int(stretch/advert)/4 || resyncing.master < int(stretch/advert)/4 {
		t.Errorf("the capture saw %d and %d adverts from the master in two stretches of %v at %v: %s", quiet.master, resyncing.master, stretch, advert, errb.String())
	}
	// Each flush empties both tables, and re-syncs every second install
	// them again; on a busy emulated guest a flush often comes while a
	// re-sync is still at it, so ask for a quarter of the whole: still
	// thousands of operations.
	if want := flushes * resyncServices / 2; svcRepairs < want || realRepairs < want*resyncReals {
		t.Errorf("%d services and %d real servers installed again after %d flushes of both tables, want at least %d and %d: the re-syncs did not do their work",
			svcRepairs, realRepairs, flushes, want, want*resyncReals)
	}
}

// resyncWhole waits up to d for h's IPVS table to hold every configured
// service and real server, and returns what it held last. It lists the
// table every 200 ms: a listing of 2,200 entries is work for the
// emulated guest.
func resyncWhole(t *testing.T, h *netlab.Host, d time.Duration) (services, reals int, ok bool) {
	t.Helper()
	for deadline := time.Now().Add(d); ; time.Sleep(200 * time.Millisecond) {
		out, err := h.Run(t.Context(), "ipvsadm", "-Ln")
		if err != nil {
			t.Fatalf("%s: ipvsadm -Ln: %v", h.Label, err)
		}
		services, reals = strings.Count(string(out), "\nTCP  "), strings.Count(string(out), "  -> 198.51.100.")
		if services == resyncServices && reals == resyncServices*resyncReals {
			return services, reals, true
		}
		if time.Now().After(deadline) {
			return services, reals, false
		}
	}
}

func resyncConfig(name, dir string, prio int, advert time.Duration) string {
	var b strings.Builder
	fmt.Fprintf(&b, `node: {name: %s, state_dir: %s/state, control_socket: %s/ctl.sock, log: {level: info, format: text}}
vrrp:
  instances:
    - name: VI_1
      interface: eth0
      vrid: 51
      priority: %d
      advert_interval: %v
      virtual_addresses: [192.0.2.50]
ipvs:
  resync_interval: 1s
  virtual_services:
`, name, dir, dir, prio, advert)
	for s := range resyncServices {
		// No health check: the real servers are addresses only, and the
		// table is to stay whole.
		fmt.Fprintf(&b, "    - {name: s%d, address: \"192.0.2.50:%d\", scheduler: rr, forwarding: dr, check: {type: none}, real_servers: [", s, 10000+s)
		for r := range resyncReals {
			if r > 0 {
				b.WriteString(", ")
			}
			fmt.Fprintf(&b, "{address: 198.51.100.%d}", 10+r)
		}
		b.WriteString("]}\n")
	}
	return b.String()
}
