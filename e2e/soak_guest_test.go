//go:build vmguest

package e2e

import (
	"bufio"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/procstat"
)

// usage is what a directord process holds.
type usage struct {
	goroutines, fds, threads int
	rssKB                    int
}

func (u usage) String() string {
	return fmt.Sprintf("%d goroutines, %d fds, %d threads, %.1f MB RSS", u.goroutines, u.fds, u.threads, float64(u.rssKB)/1024)
}

// measure reads d's goroutines (its metrics), open files and resident
// memory (/proc).
func measure(t *testing.T, d *director) usage {
	t.Helper()
	var u usage
	pid := d.proc().Pid()
	var rss int64
	var err, err2, err3 error
	u.fds, err = procstat.FDs(pid)
	u.threads, err2 = procstat.Threads(pid)
	rss, err3 = procstat.RSS(pid)
	if err := errors.Join(err, err2, err3); err != nil {
		t.Fatal(err)
	}
	u.rssKB = int(rss >> 10)
	var c net.Conn
	if err := d.h.Do(func() (err error) { c, err = net.DialTimeout("tcp4", d.metrics, 5*time.Second); return err }); err != nil {
		t.Fatalf("%s metrics: %v", d.name(), err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	fmt.Fprintf(c, "GET /metrics HTTP/1.0\r\nHost: %s\r\n\r\n", d.metrics)
	sc := bufio.NewScanner(c)
	sc.Buffer(make([]byte, 1<<16), 1<<20)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "go_goroutines "); ok {
			f, _ := strconv.ParseFloat(v, 64)
			u.goroutines = int(f)
		}
	}
	if u.goroutines == 0 {
		t.Fatalf("%s: no go_goroutines in its metrics", d.name())
	}
	return u
}

// The soak: DIRECTORD_E2E_SOAK failovers (default 200), alternating a
// `directorctl drill VI_1 --return` on lb1 (lb2 takes over, lb1 takes
// back) and a SIGKILL of lb1 (lb2 takes over; lb1 restarts and preempts).
// lb2 runs through every one of them without a restart: its goroutines,
// open files and threads must come back to what they were after the
// warm-up, its memory stay flat; after every cycle lb1 alone is master
// and holds each VIP.
func TestGuestSoak(t *testing.T) {
	n := 200
	if v := os.Getenv("DIRECTORD_E2E_SOAK"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	l := newLab(t)
	l.metrics = true
	p := &pair{t: t, l: l, kind: "directord", d: [2]*director{l.director("directord", 0), l.director("directord", 1)}}
	for _, d := range p.d {
		d.preemptDelay = 0
	}
	p.d[0].start()
	p.d[0].waitState("MASTER", 20*time.Second)
	p.d[1].start()
	p.d[1].waitState("BACKUP", 20*time.Second)
	defer p.stop()

	var base usage
	splitBrain, leaked := 0, 0
	started := time.Now()
	warm := 10
	for failovers, cycle := 0, 0; failovers < n; cycle++ {
		if failovers == warm {
			base = measure(t, p.d[1])
			t.Logf("after %d failovers: lb2 has %v", warm, base)
		}
		if cycle%2 == 0 {
			p.d[0].ctl("drill", "VI_1", "--return")
		} else {
			p.d[0].stop(syscall.SIGKILL)
			p.d[1].waitState("MASTER", 10*time.Second)
			p.d[0].start()
		}
		failovers += 2
		p.d[0].waitState("MASTER", 15*time.Second)
		p.d[1].waitState("BACKUP", 10*time.Second)
		if !waitUntil(func() bool { k, _ := l.leaked(); return k == 0 }, 5*time.Second) {
			_, what := l.leaked()
			t.Errorf("after failover %d: VIPs leaked: %s", failovers, what)
			leaked++
		}
		if p.d[0].state() == "MASTER" && p.d[1].state() == "MASTER" {
			splitBrain++
		}
		if failovers%50 == 0 {
			t.Logf("%d failovers in %v; lb2: %v", failovers, time.Since(started).Round(time.Second), measure(t, p.d[1]))
		}
	}
	// Let timers and goroutines of the last failover end.
	time.Sleep(3 * time.Second)
	end := measure(t, p.d[1])
	fmt.Printf("SOAK failovers=%d took=%v split_brain=%d leaked_vips=%d lb2_after_warmup=%q lb2_end=%q\n",
		n, time.Since(started).Round(time.Second), splitBrain, leaked, base, end)
	if splitBrain != 0 {
		t.Errorf("split brain after %d cycles", splitBrain)
	}
	if end.goroutines > base.goroutines+5 {
		t.Errorf("lb2's goroutines grew from %d to %d over %d failovers", base.goroutines, end.goroutines, n)
	}
	if end.fds > base.fds {
		t.Errorf("lb2's open files grew from %d to %d over %d failovers", base.fds, end.fds, n)
	}
	if end.threads > base.threads+2 {
		t.Errorf("lb2's threads grew from %d to %d over %d failovers", base.threads, end.threads, n)
	}
	// Flat: the Go heap breathes, but no steady growth per failover.
	if end.rssKB > base.rssKB+16*1024 {
		t.Errorf("lb2's resident memory grew from %d kB to %d kB over %d failovers", base.rssKB, end.rssKB, n)
	}
}
