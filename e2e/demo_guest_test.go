//go:build vmguest

package e2e

import (
	"fmt"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/directord/directord/internal/vmtest"
)

// say prints a demo line; the host prints what follows "DEMO| ".
func say(format string, args ...any) {
	for _, line := range strings.Split(strings.TrimRight(fmt.Sprintf(format, args...), "\n"), "\n") {
		fmt.Println("DEMO| " + line)
	}
}

// The demo (make demo): the lab, directord's status and IPVS table on the
// master, one drill under load with its timeline, and the cleanup.
func TestGuestDemo(t *testing.T) {
	began := time.Now()
	where := "on this host, whose kernel has IPVS"
	if vmtest.InGuest() {
		where = "in a qemu guest (Debian's kernel, with IPVS)"
	}
	say("== lab: network namespaces %s", where)
	say(`
   client 192.0.2.100 ─┐
   rs1..rs3 .21-.23   ─┤ LAN 192.0.2.0/24   VIP 192.0.2.50  DR :80  NAT :8080
   sorry 192.0.2.30   ─┤ (DR real servers hold the VIP on lo, arp_ignore/announce)
   lb1 .11   lb2 .12  ─┘
   lb1 203.0.113.11 ── sync ── lb2 203.0.113.12   (IPVS connection sync)
   lb1 198.51.100.2 ─┐
   lb2 198.51.100.3 ─┤ reals 198.51.100.0/24, gateway 198.51.100.1 = second VIP
   nrs1..nrs3 .11-.13, nsorry .30 (NAT real servers, HTTP :8080)`)
	l := newLab(t)
	say("== directord on lb1 (priority 150) and lb2 (priority 100): VRRPv3 every %v, preempt_delay %v,", labAdvert, labPreemptDelay)
	say("   http checks every %v, connection sync following VI_1", labCheck)
	p := l.startPair("directord")
	defer p.stop()
	for _, d := range p.d {
		out := string(d.proc().Output())
		switch {
		case strings.Contains(out, "VRRP adverts are timed by the kernel"):
			say("   %s: a master's adverts are queued in the kernel ahead of time (io_uring)", d.name())
		case vmtest.InGuest():
			// Debian's 6.1 kernel has what the advert timer needs.
			t.Errorf("%s: the advert timer did not start in the guest; log:\n%s", d.name(), d.tail())
		default:
			say("   %s: this kernel cannot queue adverts ahead; the VRRP thread sends them itself", d.name())
		}
	}
	say("\n== directorctl status (lb1)")
	say("%s", p.d[0].ctl("status"))
	say("== directorctl ipvs (lb1)")
	say("%s", p.d[0].ctl("ipvs"))

	say("== load: a new connection every %v (DR and NAT in turn), %d long-lived connections with a request every %v", loadEvery, loadLong, loadTick)
	ld, err := startLoad(l.client)
	if err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	if !waitUntil(func() bool { return l.established(1) >= loadLong }, 20*time.Second) {
		t.Fatalf("lb2's table never held the %d long-lived connections", loadLong)
	}
	var per []string
	for s, n := range ld.servers() {
		per = append(per, fmt.Sprintf("%s %d", s, n))
	}
	slices.Sort(per)
	say("   long-lived connections per real server: %s; lb2 (backup) has %d established entries from sync", strings.Join(per, ", "), l.established(1))

	say("\n== drill: directorctl drill VI_1 --return on lb1, the master, under load")
	say("   (lb1 sends priority 0, releases its VIPs and holds at priority 1; lb2 takes over after Skew_Time;")
	say("   then lb1 returns to its priority and preempts after one Master_Down_Interval)")
	m0 := p.masters()
	t0 := time.Now()
	say("%s", p.d[0].ctl("drill", "VI_1", "--return"))
	p.d[0].waitState("MASTER", 10*time.Second)
	p.d[1].waitState("BACKUP", 10*time.Second)
	time.Sleep(3 * time.Second)
	t1 := time.Now()
	res := ld.result(t0, t1, nil)
	say("   both directors' logs (ms after the drill began):")
	for _, e := range timeline(p, t0) {
		say("   %s", e)
	}
	say("   client: outage %d ms (at +%d ms: the longest a new connection waited or failed); %d of %d new connections failed; %d of %d long-lived connections broke",
		res.Outage.Milliseconds(), res.OutageAt.Milliseconds(), res.Failed, res.Attempts, res.Broken+res.BrokenDead, loadLong)
	leaked, what := l.leaked()
	say("   VRRP: %d master change(s); VIPs on one director each: %v %s", p.masters()-m0, leaked == 0, what)
	say("\n== directorctl status (lb1)")
	say("%s", p.d[0].ctl("status"))
	if res.Broken != 0 || leaked != 0 {
		t.Errorf("the demo drill broke %d long-lived connections, leaked %d VIPs (%s)", res.Broken, leaked, what)
	}
	say("== done in %v; the lab is removed (namespaces, processes) as the guest powers off", time.Since(began).Round(time.Second))
}

var logTime = regexp.MustCompile(`^time=(\S+) level=\S+ msg=(.*)$`)

// timeline lists the directors' notable log lines since t0, by time.
func timeline(p *pair, t0 time.Time) []string {
	type ev struct {
		at   time.Duration
		line string
	}
	var evs []ev
	for _, d := range p.d {
		for _, run := range d.runs {
			for _, line := range strings.Split(string(run.Output()), "\n") {
				m := logTime.FindStringSubmatch(line)
				if m == nil {
					continue
				}
				at, err := time.Parse(time.RFC3339Nano, m[1])
				if err != nil || at.Before(t0) {
					continue
				}
				msg := m[2]
				keep := false
				for _, k := range []string{"VRRP transition", "VIP bound", "VIP released", "sync daemon", "directord stopping", "drill"} {
					keep = keep || strings.Contains(msg, k)
				}
				if keep {
					evs = append(evs, ev{at.Sub(t0), fmt.Sprintf("%6d  %s  %s", at.Sub(t0).Milliseconds(), d.name(), msg)})
				}
			}
		}
	}
	slices.SortStableFunc(evs, func(a, b ev) int { return int(a.at - b.at) })
	var out []string
	for _, e := range evs {
		out = append(out, e.line)
	}
	return out
}
