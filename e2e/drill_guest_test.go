//go:build vmguest

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A pair is one implementation running on lb1 and lb2 of the lab.
type pair struct {
	t     *testing.T
	l     *lab
	kind  string
	d     [2]*director
	notes []string
}

// startPair starts kind on lb1 (master) and lb2 (backup) and waits until
// the services answer.
func (l *lab) startPair(kind string) *pair {
	l.t.Helper()
	p := &pair{t: l.t, l: l, kind: kind, d: [2]*director{l.director(kind, 0), l.director(kind, 1)}}
	p.d[0].start()
	p.d[0].waitState("MASTER", 20*time.Second)
	p.d[1].start()
	p.d[1].waitState("BACKUP", 20*time.Second)
	// Every real server is up in both tables before the load starts.
	for i := range p.d {
		if !waitUntil(func() bool { return strings.Count(run(l.t, l.lbh[i], "ipvsadm", "-Ln"), "-> 19") >= 6 }, 30*time.Second) {
			l.t.Fatalf("%s on %s: the real servers never all came up:\n%s\n%s", kind, l.lbh[i].Label, run(l.t, l.lbh[i], "ipvsadm", "-Ln"), p.d[i].tail())
		}
	}
	return p
}

// stopPair stops both directors and removes what they leave behind, so
// that the next implementation starts on a clean lab.
func (p *pair) stop() {
	for i := range p.d {
		p.d[i].stop(syscall.SIGTERM)
	}
	for _, h := range p.l.lbh {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		h.Run(ctx, "ipvsadm", "--stop-daemon", "master")
		h.Run(ctx, "ipvsadm", "--stop-daemon", "backup")
		h.Run(ctx, "ipvsadm", "-C")
		h.Run(ctx, "ip", "addr", "del", labVIP+"/32", "dev", "eth0")
		h.Run(ctx, "ip", "addr", "del", labGateway+"/32", "dev", "eth2")
		cancel()
	}
}

func (p *pair) note(format string, args ...any) {
	p.notes = append(p.notes, fmt.Sprintf(format, args...))
}

// await waits for cond, and notes it when it does not come.
func (p *pair) await(cond func() bool, timeout time.Duration, what string) bool {
	if waitUntil(cond, timeout) {
		return true
	}
	p.note("no %s within %v", what, timeout)
	return false
}

func (p *pair) awaitState(i int, st string, timeout time.Duration) bool {
	return p.await(func() bool { return p.d[i].state() == st }, timeout, p.d[i].name()+" "+st)
}

func (p *pair) masters() int { return p.d[0].masters() + p.d[1].masters() }

// A scenario is one drill: setup (not measured), the action under load,
// then the pair settles with final as master and the result is taken;
// restore (not measured) brings the pair back to lb1 master.
type scenario struct {
	id, name string
	// moves: the action moves the VIP to the backup, so the drill waits
	// until the backup's table holds the long-lived connections.
	moves   bool
	setup   func(p *pair)
	action  func(p *pair) (dead map[string]bool)
	final   int
	restore func(p *pair)
}

// row is one line of the drill table.
type row struct {
	Impl, ID, Scenario string
	loadResult
	Transitions int
	Leaked      int
	LeakedWhat  string
	Notes       string
}

// String is the DRILL-ROW line the host parses (tab-separated).
func (r row) String() string {
	return strings.Join([]string{"DRILL-ROW", r.Impl, r.ID, r.Scenario,
		fmt.Sprint(r.Outage.Milliseconds()), fmt.Sprint(r.Failed), fmt.Sprint(r.Attempts),
		fmt.Sprint(r.Broken), fmt.Sprint(r.BrokenDead), fmt.Sprint(r.Transitions), fmt.Sprint(r.Leaked), fmt.Sprint(r.Stall.Milliseconds()),
		strings.NewReplacer("\t", " ", "\n", " ").Replace(strings.Join([]string{r.LeakedWhat, r.Notes, r.FailWhy, r.BrokenWhy}, " | "))}, "\t")
}

// restart brings a stopped lb1 back and lets it take over again.
func (p *pair) restart(i int) { p.d[i].start() }

func killDrill(sig syscall.Signal) func(p *pair) map[string]bool {
	return func(p *pair) map[string]bool {
		p.d[0].stop(sig)
		p.awaitState(1, "MASTER", 10*time.Second)
		time.Sleep(time.Second)
		p.restart(0)
		return nil
	}
}

func serverDrill(names ...string) func(p *pair) map[string]bool {
	return func(p *pair) map[string]bool {
		dead := map[string]bool{}
		var rss []*realServer
		for _, rs := range append(p.l.reals, p.l.sorry...) {
			for _, n := range names {
				if rs.name == n {
					rss = append(rss, rs)
					dead[n] = true
				}
			}
		}
		for _, rs := range rss {
			rs.die()
		}
		time.Sleep(4 * time.Second)
		for _, rs := range rss {
			rs.start()
		}
		time.Sleep(3 * time.Second)
		return dead
	}
}

// scenarios lists the drills of the table, by their numbers in the issue.
func scenarios() []scenario {
	restoreLB1 := func(p *pair) {
		p.d[0].stop(syscall.SIGTERM)
		p.d[0].preempt = true
		p.d[0].start()
		p.awaitState(0, "MASTER", 20*time.Second)
		p.awaitState(1, "BACKUP", 10*time.Second)
	}
	return []scenario{
		{id: "1", name: "master SIGKILL", moves: true, action: killDrill(syscall.SIGKILL)},
		{id: "2", name: "master SIGTERM", moves: true, action: killDrill(syscall.SIGTERM)},
		{id: "3", name: "master link down", moves: true, action: func(p *pair) map[string]bool {
			link := p.l.lbh[0].Link("eth0")
			if err := link.Unplug(); err != nil {
				p.t.Fatal(err)
			}
			p.awaitState(1, "MASTER", 10*time.Second)
			time.Sleep(2 * time.Second)
			if err := link.Plug(); err != nil {
				p.t.Fatal(err)
			}
			return nil
		}},
		{id: "4", name: "directorctl drill", moves: true, action: func(p *pair) map[string]bool {
			if p.kind != "directord" {
				p.note("%s has no drill command", p.kind)
				return nil
			}
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			// The master hands over and, with --return, takes the instance
			// back after one Master_Down_Interval.
			out, err := p.d[0].h.Run(ctx, filepath.Join(binDir(), "directorctl"), "-s", p.d[0].socket(), "drill", "VI_1", "--return")
			if err != nil {
				p.note("directorctl drill VI_1 --return: %v: %s", err, strings.TrimSpace(string(out)))
				return nil
			}
			p.t.Logf("directorctl drill VI_1 --return on lb1:\n%s", out)
			return nil
		}},
		{id: "5", name: "real server dies, returns", action: serverDrill("rs1", "nrs1")},
		{id: "6", name: "all real servers die, return", action: serverDrill("rs1", "rs2", "rs3", "nrs1", "nrs2", "nrs3")},
		{id: "7", name: "VRRP partition, heal", moves: true, action: func(p *pair) map[string]bool {
			// lb2 neither sends nor receives adverts on the LAN; client
			// traffic still flows: both become master (split brain).
			h := p.l.lbh[1]
			run(p.t, h, "nft", "add table inet partition")
			run(p.t, h, "nft", "add chain inet partition in { type filter hook input priority 0 ; }")
			run(p.t, h, "nft", "add chain inet partition out { type filter hook output priority 0 ; }")
			run(p.t, h, "nft", "add rule inet partition in iifname eth0 ip protocol vrrp drop")
			run(p.t, h, "nft", "add rule inet partition out oifname eth0 ip protocol vrrp drop")
			p.awaitState(1, "MASTER", 10*time.Second)
			time.Sleep(2 * time.Second)
			run(p.t, h, "nft", "delete table inet partition")
			// Whose MAC the client and a NAT real server use for the two
			// VIPs after the heal.
			time.Sleep(2 * time.Second)
			p.t.Logf("after the heal: lb1 eth0 %s eth2 %s, lb2 eth0 %s eth2 %s; client: %s; nrs1: %s",
				p.l.lbh[0].MAC(), p.l.lbh[0].Link("eth2").MAC, p.l.lbh[1].MAC(), p.l.lbh[1].Link("eth2").MAC,
				strings.TrimSpace(run(p.t, p.l.client, "ip", "neigh", "show", labVIP)),
				strings.TrimSpace(run(p.t, p.l.reals[3].h, "ip", "neigh", "show", labGateway)))
			return nil
		}},
		{id: "8", name: "20 reloads", action: func(p *pair) map[string]bool {
			for i := range 20 {
				for _, d := range p.d {
					if err := d.reload(); err != nil {
						p.note("reload %d of %s: %v", i+1, d.name(), err)
					}
				}
				time.Sleep(200 * time.Millisecond)
			}
			time.Sleep(2 * time.Second)
			return nil
		}},
		{id: "9a", name: "master returns, preempt",
			setup: func(p *pair) {
				p.d[0].stop(syscall.SIGTERM)
				p.awaitState(1, "MASTER", 10*time.Second)
			},
			action: func(p *pair) map[string]bool { p.restart(0); return nil }},
		{id: "9b", name: "master returns, no preempt",
			setup: func(p *pair) {
				p.d[0].preempt = false
				p.d[0].stop(syscall.SIGTERM)
				p.awaitState(1, "MASTER", 10*time.Second)
			},
			action: func(p *pair) map[string]bool {
				p.restart(0)
				p.awaitState(0, "BACKUP", 10*time.Second)
				time.Sleep(labPreemptDelay + 2*time.Second)
				return nil
			},
			final: 1, restore: restoreLB1},
	}
}

// drill runs one scenario under load and returns its row.
func (p *pair) drill(sc scenario) row {
	t := p.t
	p.notes = nil
	if sc.setup != nil {
		sc.setup(p)
	}
	ld, err := startLoad(p.l.client)
	if err != nil {
		// The previous scenario's aftermath (a real server's neighbour
		// entry still on the other director after a healed partition)
		// can take a few more seconds to clear: the row says so.
		p.note("the services did not answer when the scenario began (%v); started again 20 s later", err)
		time.Sleep(20 * time.Second)
		ld, err = startLoad(p.l.client)
	}
	if err != nil {
		t.Fatalf("%s, scenario %s: %v\n%s\n%s", p.kind, sc.id, err, p.d[0].tail(), p.d[1].tail())
	}
	if ld.retried > 0 {
		p.note("the long-lived connections needed %d more dials to open", ld.retried)
	}
	time.Sleep(time.Second)
	if sc.moves {
		// The backup knows every long-lived connection before the master
		// goes, or the drill measures the sync threshold, not a failover.
		b := 1
		if p.d[1].state() == "MASTER" {
			b = 0
		}
		p.await(func() bool { return p.l.established(b) >= loadLong }, 20*time.Second,
			fmt.Sprintf("%d established connections in %s's table", loadLong, p.d[b].name()))
	}
	m0 := p.masters()
	from := time.Now()
	dead := sc.action(p)
	other := 1 - sc.final
	p.await(func() bool {
		if p.d[sc.final].state() != "MASTER" || p.d[other].state() != "BACKUP" {
			return false
		}
		n, _ := p.l.leaked()
		return n == 0
	}, 30*time.Second, fmt.Sprintf("settling with %s MASTER, %s BACKUP, each VIP on one director", p.d[sc.final].name(), p.d[other].name()))
	// Settled is also both services answering new connections again.
	p.await(func() bool { return ld.serving(20) }, 60*time.Second, "20 new connections in a row to each service")
	// The long-lived connections show whether they survived.
	time.Sleep(2 * time.Second)
	to := time.Now()
	r := row{Impl: p.kind, ID: sc.id, Scenario: sc.name, loadResult: ld.result(from, to, dead)}
	r.Transitions = p.masters() - m0
	r.Leaked, r.LeakedWhat = p.l.leaked()
	if sc.restore != nil {
		sc.restore(p)
	}
	r.Notes = strings.Join(p.notes, "; ")
	fmt.Println(r.String())
	t.Logf("%s %s (%s): guest stalled up to %v; outage %v at +%v, %d/%d new connections failed (%s), %d long-lived broken (%s) +%d on dead servers, %d transitions, %d leaked VIPs %s; %s",
		r.Impl, r.ID, r.Scenario, r.Stall.Round(time.Millisecond), r.Outage, r.OutageAt.Round(time.Millisecond), r.Failed, r.Attempts, r.FailWhy, r.Broken, r.BrokenWhy, r.BrokenDead, r.Transitions, r.Leaked, r.LeakedWhat, r.Notes)
	return r
}

// pick returns the scenarios whose ids are listed.
func pick(ids ...string) []scenario {
	var out []scenario
	for _, sc := range scenarios() {
		for _, id := range ids {
			if sc.id == id {
				out = append(out, sc)
			}
		}
	}
	return out
}

// outageBound is what the CI drill allows a client-visible outage: the
// backup's Master_Down_Interval (3 × advert + Skew_Time) plus 3 s of
// slack for the gratuitous ARP, a SYN lost in the handover (the client
// retransmits it after 1 s) and, above all, qemu's software emulation,
// which runs everything about ten times slower and stalls now and then
// when the VM tier boots other guests beside this one.
func outageBound() time.Duration { return masterDown() + 3*time.Second }

// stallLimit is the longest guest stall (qemu descheduled by a busy host,
// every process in the guest frozen alike) after which the CI drill's
// timings are not directord's: the drill runs once more.
const stallLimit = 500 * time.Millisecond

// The short drill set CI runs (issue 10: 1, 2, 5, 7) with directord and
// connection sync on: no outage above outageBound, no long-lived
// connection broken (but those on a real server that was stopped), no VIP
// left on both directors or on none once the pair settled, and the master
// changes each drill must make.
func TestGuestDrillCI(t *testing.T) {
	l := newLab(t)
	l.metrics = true
	p := l.startPair("directord")
	defer p.stop()
	want := map[string]int{"1": 2, "2": 2, "5": 0, "7": 1}
	var base usage
	for i, sc := range pick("1", "2", "5", "7") {
		r := p.drill(sc)
		if r.Stall > stallLimit {
			// The host descheduled the whole guest in the middle of the
			// drill: its timings say nothing about directord. Once more.
			t.Logf("scenario %s: the guest stalled for %v (limit %v); running it again", sc.id, r.Stall, stallLimit)
			r = p.drill(sc)
		}
		if i == 0 {
			// lb2 lives through every drill; it has been master once now.
			base = measure(t, p.d[1])
		}
		if r.Outage > outageBound() {
			t.Errorf("scenario %s (%s): outage %v, bound %v (Master_Down_Interval %v + 3 s)", sc.id, sc.name, r.Outage, outageBound(), masterDown())
		}
		if r.Broken != 0 {
			t.Errorf("scenario %s (%s): %d long-lived connections broke with sync on: %s", sc.id, sc.name, r.Broken, r.BrokenWhy)
		}
		if r.Leaked != 0 {
			t.Errorf("scenario %s (%s): VIPs leaked: %s", sc.id, sc.name, r.LeakedWhat)
		}
		if r.Transitions != want[sc.id] {
			t.Errorf("scenario %s (%s): %d times a director became master, want %d", sc.id, sc.name, r.Transitions, want[sc.id])
		}
		if r.Notes != "" {
			t.Errorf("scenario %s (%s): %s", sc.id, sc.name, r.Notes)
		}
		if r.LongRounds == 0 || r.Attempts == 0 {
			t.Errorf("scenario %s (%s): no load ran", sc.id, sc.name)
		}
	}
	// Nothing leaks in the director that lived through the drills. What
	// the last drill left running (an announcement burst, a hook) may
	// hold a file or a goroutine for a moment: a leak is what stays.
	var end usage
	for deadline := time.Now().Add(15 * time.Second); ; {
		time.Sleep(time.Second)
		end = measure(t, p.d[1])
		if (end.fds <= base.fds && end.goroutines <= base.goroutines+5) || time.Now().After(deadline) {
			break
		}
	}
	t.Logf("lb2 after drill 1: %v; at the end: %v", base, end)
	if end.fds > base.fds || end.goroutines > base.goroutines+5 {
		t.Errorf("lb2 went from %v after drill 1 to %v after the drills, and stayed there for 15 s", base, end)
	}
}

// Every scenario with directord, then with keepalived on the same lab
// (make drill: BenchmarkVMDrill). DIRECTORD_E2E_SCENARIOS narrows the
// scenarios (ids separated by commas).
func TestGuestDrillAll(t *testing.T) {
	ids := []string{"1", "2", "3", "4", "5", "6", "7", "8", "9a", "9b"}
	if v := os.Getenv("DIRECTORD_E2E_SCENARIOS"); v != "" {
		ids = strings.Split(v, ",")
	}
	impls := []string{"directord", "keepalived"}
	if v := os.Getenv("DIRECTORD_E2E_IMPLS"); v != "" {
		impls = strings.Split(v, ",")
	}
	l := newLab(t)
	for _, kind := range impls {
		p := l.startPair(kind)
		for _, sc := range pick(ids...) {
			p.drill(sc)
		}
		p.stop()
	}
}
