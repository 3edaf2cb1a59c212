package healthcheck

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/internal/netlab"
)

// The netns test runs the scheduler with the real checkers in a helper
// process inside the director's namespace (probes dial from the checkers'
// own goroutines, which a test cannot pin to a namespace); the servers live
// in another namespace. The helper prints one "EVENT {json}" per transition.
var (
	checkHelper = flag.String("hc.helper", "", "internal: run the check scheduler on this JSON list of specs")
	benchHelper = flag.Int("hc.bench", 0, "internal: run this many benchmark checks (bench_test.go)")
)

func TestMain(m *testing.M) {
	flag.Parse()
	if *checkHelper != "" {
		os.Exit(runCheckHelper(*checkHelper))
	}
	if *benchHelper > 0 {
		os.Exit(runBenchHelper(*benchHelper))
	}
	os.Exit(m.Run())
}

type helperEvent struct {
	ID     string    `json:"id"`
	Up     bool      `json:"up"`
	Reason string    `json:"reason"`
	At     time.Time `json:"at"`
}

func runCheckHelper(specsJSON string) int {
	var specs []Spec
	if err := json.Unmarshal([]byte(specsJSON), &specs); err != nil {
		fmt.Println("bad specs:", err)
		return 2
	}
	s := NewScheduler(NewChecker, nil)
	if err := s.Update(specs); err != nil {
		fmt.Println("update:", err)
		return 2
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	for tr := range s.Start(ctx) {
		b, _ := json.Marshal(helperEvent{ID: tr.ID, Up: tr.Up, Reason: tr.Reason, At: tr.At})
		fmt.Printf("EVENT %s\n", b)
	}
	return 0
}

func helperEvents(p *netlab.Proc) []helperEvent {
	var out []helperEvent
	sc := bufio.NewScanner(bytes.NewReader(p.Output()))
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "EVENT "); ok {
			var e helperEvent
			if json.Unmarshal([]byte(rest), &e) == nil {
				out = append(out, e)
			}
		}
	}
	return out
}

// waitStates waits until the last event of every check says up (or down)
// and returns those events.
func waitStates(t *testing.T, p *netlab.Proc, ids []string, up bool) map[string]helperEvent {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		last := map[string]helperEvent{}
		for _, e := range helperEvents(p) {
			last[e.ID] = e
		}
		done := true
		for _, id := range ids {
			if e, ok := last[id]; !ok || e.Up != up {
				done = false
			}
		}
		if done {
			return last
		}
		if time.Now().After(deadline) {
			t.Fatalf("checks not all up=%v within 10s; output:\n%s", up, p.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Every network checker against real servers in another namespace: up after
// `rise` good probes, down after `fall` bad ones with the reason, up again
// when the server recovers.
func TestNetnsCheckersAgainstServersInNamespaces(t *testing.T) {
	lab := netlab.New(t)
	lb := lab.AddHost("lb", "192.0.2.1/24")
	srv := lab.AddHost("srv", "192.0.2.11/24")

	var tcpL, httpL net.Listener
	var udpC, dnsC net.PacketConn
	err := srv.Do(func() (err error) {
		if tcpL, err = net.Listen("tcp", "192.0.2.11:80"); err != nil {
			return err
		}
		if httpL, err = net.Listen("tcp", "192.0.2.11:8080"); err != nil {
			return err
		}
		if udpC, err = net.ListenPacket("udp", "192.0.2.11:7"); err != nil {
			return err
		}
		dnsC, err = net.ListenPacket("udp", "192.0.2.11:53")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	var healthy, udpUp, dnsUp atomic.Bool
	healthy.Store(true)
	udpUp.Store(true)
	dnsUp.Store(true)
	var wg sync.WaitGroup
	t.Cleanup(func() { tcpL.Close(); httpL.Close(); udpC.Close(); dnsC.Close(); wg.Wait() })
	serve := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }
	acceptTCP := func(l net.Listener) {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}
	serve(func() { acceptTCP(tcpL) })
	serve(func() {
		_ = http.Serve(httpL, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if !healthy.Load() || r.URL.Path != "/healthz" {
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			fmt.Fprint(w, "ok")
		}))
	})
	answer := func(c net.PacketConn, up *atomic.Bool, reply func([]byte) []byte) {
		buf := make([]byte, 2048)
		for {
			n, from, err := c.ReadFrom(buf)
			if err != nil {
				return
			}
			if up.Load() {
				if r := reply(buf[:n]); r != nil {
					c.WriteTo(r, from)
				}
			}
		}
	}
	serve(func() { answer(udpC, &udpUp, func(b []byte) []byte { return bytes.Clone(b) }) })
	serve(func() { answer(dnsC, &dnsUp, dnsResponder) })

	addr := netip.MustParseAddr("192.0.2.11")
	timing := func(c *config.Check) {
		c.Interval, c.Timeout, c.Rise, c.Fall = 100*time.Millisecond, 80*time.Millisecond, 2, 3
	}
	specs := []Spec{
		{ID: "tcp", Addr: addr, Port: 80, Check: config.Check{Type: "tcp"}},
		{ID: "http", Addr: addr, Port: 8080, Check: config.Check{Type: "http", Path: "/healthz", ExpectStatus: []int{200}, BodyRegex: "^ok$"}},
		{ID: "udp", Addr: addr, Port: 7, Check: config.Check{Type: "udp", Send: "ping", Expect: "ping"}},
		{ID: "dns", Addr: addr, Port: 53, Check: config.Check{Type: "dns", Query: "ok.example", Record: "A"}},
	}
	var ids []string
	for i := range specs {
		timing(&specs[i].Check)
		ids = append(ids, specs[i].ID)
	}
	b, err := json.Marshal(specs)
	if err != nil {
		t.Fatal(err)
	}
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	p := lb.Start(exe, "-hc.helper", string(b))

	waitStates(t, p, ids, true)

	broken := time.Now()
	tcpL.Close()
	healthy.Store(false)
	udpUp.Store(false)
	dnsUp.Store(false)
	down := waitStates(t, p, ids, false)
	for id, want := range map[string]string{
		"tcp":  "connect 192.0.2.11:80",
		"http": "http 503 from 192.0.2.11:8080",
		"udp":  "no reply from 192.0.2.11:7",
		"dns":  "no reply",
	} {
		e := down[id]
		if !strings.Contains(e.Reason, want) && !(id == "dns" && strings.Contains(e.Reason, "timeout")) {
			t.Errorf("%s down: reason %q, want it to say %q", id, e.Reason, want)
		}
		// fall = 3 failures at a 100ms interval: not before the third probe.
		if took := e.At.Sub(broken); took < 150*time.Millisecond || took > 2*time.Second {
			t.Errorf("%s marked down %v after the failure; want about fall x interval (300ms)", id, took)
		}
	}

	if err := srv.Do(func() (err error) { tcpL, err = net.Listen("tcp", "192.0.2.11:80"); return err }); err != nil {
		t.Fatal(err)
	}
	serve(func() { acceptTCP(tcpL) })
	healthy.Store(true)
	udpUp.Store(true)
	dnsUp.Store(true)
	waitStates(t, p, ids, true)
}
