//go:build vmguest

package e2e

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/directord/directord/internal/netlab"
)

// The load client: a new connection every loadEvery (alternately to the DR
// and the NAT service, one HTTP request each) and loadLong long-lived
// connections (half per service) each sending a request every loadTick on
// the same connection.
const (
	loadEvery = 10 * time.Millisecond
	loadLong  = 50
	loadTick  = 100 * time.Millisecond
	// loadTimeout bounds one new connection (dial and answer): a SYN lost
	// in a takeover is retransmitted after 1 s, which still counts.
	loadTimeout = 2 * time.Second
	// longDeadline is how long one exchange on a long-lived connection
	// may take before it counts as broken: TCP retransmissions bridge a
	// takeover well within it; a reset or close ends it at once.
	longDeadline = 5 * time.Second
)

var loadTargets = []string{labVIP + ":80", labVIP + ":8080"}

type load struct {
	client *netlab.Host
	stop   chan struct{}
	wg     sync.WaitGroup
	start  time.Time

	mu      sync.Mutex
	tries   []attempt
	failWhy map[string]int

	long     []*longConn
	longDone sync.WaitGroup
	// retried counts failed dials of the long-lived connections.
	retried int
	// stalls records how late a 10 ms sleep of the client woke up: the
	// guest's own stalls (qemu descheduled on a busy host), which delay
	// every process in it alike.
	stalls []stall
}

type stall struct {
	at   time.Time
	late time.Duration
}

// attempt is one new connection: when it started, how long it took to
// answer, whether it did.
type attempt struct {
	target string
	start  time.Time
	took   time.Duration
	ok     bool
}

type longConn struct {
	target string
	server atomic.Value // string: the real server that answers
	broken atomic.Bool
	why    atomic.Value // string
	rounds atomic.Int64
}

// dial opens a TCP connection from the client's namespace.
func dial(h *netlab.Host, addr string, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := h.Do(func() (err error) { c, err = net.DialTimeout("tcp4", addr, timeout); return err })
	return c, err
}

// get sends one HTTP request on c and returns the body.
func get(c net.Conn, r *bufio.Reader, keepAlive bool) (string, error) {
	conn := "close"
	if keepAlive {
		conn = "keep-alive"
	}
	if _, err := fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: %s\r\n\r\n", labVIP, conn); err != nil {
		return "", err
	}
	resp, err := http.ReadResponse(r, nil)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var b strings.Builder
	if _, err := bufio.NewReader(resp.Body).WriteTo(&b); err != nil {
		return "", err
	}
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return strings.TrimSpace(b.String()), nil
}

// startLoad opens the long-lived connections (all must open) and starts
// the new connections.
func startLoad(client *netlab.Host) (*load, error) {
	ld := &load{client: client, stop: make(chan struct{}), failWhy: map[string]int{}}
	for i := range loadLong {
		lc := &longConn{target: loadTargets[i%2]}
		// What the previous drill left may still be settling (a client or
		// real server that has not learned the master's address yet):
		// retry for a while, and say so.
		var c net.Conn
		var err error
		for try := 1; ; try++ {
			if c, err = dial(client, lc.target, loadTimeout); err == nil {
				break
			}
			if try == 10 {
				ld.close()
				return nil, fmt.Errorf("long-lived connection %d to %s: %d attempts: %w", i, lc.target, try, err)
			}
			ld.retried++
		}
		ld.long = append(ld.long, lc)
		ld.longDone.Add(1)
		go ld.exchange(lc, c)
	}
	ld.start = time.Now()
	ld.wg.Add(2)
	go ld.newConns()
	go ld.probeStalls()
	return ld, nil
}

func (ld *load) exchange(lc *longConn, c net.Conn) {
	defer ld.longDone.Done()
	defer c.Close()
	r := bufio.NewReader(c)
	tick := time.NewTicker(loadTick)
	defer tick.Stop()
	for {
		select {
		case <-ld.stop:
			return
		case <-tick.C:
		}
		c.SetDeadline(time.Now().Add(longDeadline))
		srv, err := get(c, r, true)
		if err != nil {
			lc.broken.Store(true)
			lc.why.Store(err.Error())
			return
		}
		if prev, ok := lc.server.Load().(string); ok && prev != srv {
			lc.broken.Store(true)
			lc.why.Store(fmt.Sprintf("answered by %s, then %s", prev, srv))
			return
		}
		lc.server.Store(srv)
		lc.rounds.Add(1)
	}
}

func (ld *load) newConns() {
	defer ld.wg.Done()
	tick := time.NewTicker(loadEvery)
	defer tick.Stop()
	for n := 0; ; n++ {
		select {
		case <-ld.stop:
			return
		case <-tick.C:
		}
		ld.wg.Add(1)
		go func(target string) {
			defer ld.wg.Done()
			start := time.Now()
			err := func() error {
				c, err := dial(ld.client, target, loadTimeout)
				if err != nil {
					return err
				}
				defer c.Close()
				c.SetDeadline(start.Add(loadTimeout))
				_, err = get(c, bufio.NewReader(c), false)
				return err
			}()
			ld.mu.Lock()
			defer ld.mu.Unlock()
			ld.tries = append(ld.tries, attempt{target: target, start: start, took: time.Since(start), ok: err == nil})
			if err != nil {
				why := err.Error()
				if i := strings.LastIndex(why, ": "); i >= 0 {
					why = why[i+2:]
				}
				ld.failWhy[why]++
				return
			}
		}(loadTargets[n%2])
	}
}

func (ld *load) probeStalls() {
	defer ld.wg.Done()
	for {
		select {
		case <-ld.stop:
			return
		default:
		}
		t0 := time.Now()
		time.Sleep(10 * time.Millisecond)
		if late := time.Since(t0) - 10*time.Millisecond; late > 50*time.Millisecond {
			ld.mu.Lock()
			ld.stalls = append(ld.stalls, stall{t0, late})
			ld.mu.Unlock()
		}
	}
}

// close stops the load and waits for every connection to end.
func (ld *load) close() {
	select {
	case <-ld.stop:
	default:
		close(ld.stop)
	}
	ld.wg.Wait()
	ld.longDone.Wait()
}

// loadResult is what the client saw.
type loadResult struct {
	// Outage is the longest time the client could not open a new
	// connection: from the start of the last success before a run of
	// failed attempts to the start of the first success after it, or the
	// time a successful attempt took (a SYN retransmitted once), whichever
	// is longer. Stretches in which the client made no attempt at all (the
	// emulated guest stalls now and then) do not count.
	Outage   time.Duration
	OutageAt time.Duration // its start, from the window's start
	Failed   int
	Attempts int
	FailWhy  string
	// Broken counts long-lived connections that broke while their real
	// server lived; BrokenDead those whose real server was stopped.
	Broken, BrokenDead int
	BrokenWhy          string
	LongRounds         int64
	// Stall is the guest's longest stall in the window (see load.stalls).
	Stall time.Duration
}

// result ends the load and measures the window [from, to].
func (ld *load) result(from, to time.Time, dead map[string]bool) loadResult {
	ld.close()
	var r loadResult
	ld.mu.Lock()
	tries := slices.Clone(ld.tries)
	for _, st := range ld.stalls {
		if !st.at.Before(from) && !st.at.After(to) && st.late > r.Stall {
			r.Stall = st.late
		}
	}
	var why []string
	for k, v := range ld.failWhy {
		why = append(why, fmt.Sprintf("%d× %s", v, k))
	}
	slices.Sort(why)
	r.FailWhy = strings.Join(why, "; ")
	ld.mu.Unlock()
	slices.SortFunc(tries, func(a, b attempt) int { return a.start.Compare(b.start) })
	// Each service on its own: DR answering does not hide NAT failing.
	for _, target := range loadTargets {
		lastOK, failing := from, false
		for _, a := range tries {
			if a.target != target || a.start.Before(from) || a.start.After(to) {
				continue
			}
			r.Attempts++
			if !a.ok {
				r.Failed++
				failing = true
				continue
			}
			if failing {
				if gap := a.start.Sub(lastOK); gap > r.Outage {
					r.Outage, r.OutageAt = gap, lastOK.Sub(from)
				}
			}
			if a.took > r.Outage {
				r.Outage, r.OutageAt = a.took, a.start.Sub(from)
			}
			lastOK, failing = a.start, false
		}
		if failing {
			if gap := to.Sub(lastOK); gap > r.Outage {
				r.Outage, r.OutageAt = gap, lastOK.Sub(from)
			}
		}
	}
	var bwhy []string
	for _, lc := range ld.long {
		r.LongRounds += lc.rounds.Load()
		if !lc.broken.Load() {
			continue
		}
		srv, _ := lc.server.Load().(string)
		if dead[srv] {
			r.BrokenDead++
			continue
		}
		r.Broken++
		if len(bwhy) < 4 {
			w, _ := lc.why.Load().(string)
			bwhy = append(bwhy, fmt.Sprintf("%s via %s: %s", lc.target, srv, w))
		}
	}
	r.BrokenWhy = strings.Join(bwhy, "; ")
	return r
}

// serving reports whether the last n new connections to each service
// all succeeded.
func (ld *load) serving(n int) bool {
	ld.mu.Lock()
	defer ld.mu.Unlock()
	for _, target := range loadTargets {
		seen := 0
		for i := len(ld.tries) - 1; i >= 0 && seen < n; i-- {
			if ld.tries[i].target != target {
				continue
			}
			if !ld.tries[i].ok {
				return false
			}
			seen++
		}
		if seen < n {
			return false
		}
	}
	return true
}

// servers counts the long-lived connections per real server.
func (ld *load) servers() map[string]int {
	m := map[string]int{}
	for _, lc := range ld.long {
		if s, ok := lc.server.Load().(string); ok {
			m[s]++
		}
	}
	return m
}
