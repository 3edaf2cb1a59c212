//go:build vmguest

package daemon

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
)

// Health checks under client traffic: a client namespace opens a new
// connection to the VIP every 20 ms through directord's NAT service to
// three real servers in their own namespaces. Stopping one real server
// takes it out of rotation (removed, or quiesced to weight 0) within
// fall x interval + timeout, after which every new connection goes to the
// other two; when it returns it is back in rotation within rise x interval
// + timeout.
//
//	client 192.0.2.100 ── LAN ── lb 192.0.2.11 + VIP 192.0.2.50
//	                             lb 198.51.100.1 ── reals ── rs1..rs3 198.51.100.11..13
func TestGuestTrafficFollowsHealthChecks(t *testing.T) {
	for _, onFailure := range []string{"remove", "quiesce"} {
		t.Run(onFailure, func(t *testing.T) { testTrafficFollowsChecks(t, onFailure) })
	}
}

const (
	trafficInterval = 250 * time.Millisecond
	trafficTimeout  = 200 * time.Millisecond
	trafficFall     = 2
	trafficRise     = 1
	// trafficSlack covers applying the change and qemu's software
	// emulation, which runs everything about ten times slower and stalls
	// when the host is busy.
	trafficSlack = 2 * time.Second
)

func testTrafficFollowsChecks(t *testing.T, onFailure string) {
	lab := netlab.New(t)
	client := lab.AddHost("client", "192.0.2.100/24")
	lb := lab.AddHost("lb", "192.0.2.11/24")
	run(t, lb, "ip", "addr", "add", "192.0.2.50/32", "dev", "eth0")
	if err := lb.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/ip_forward", []byte("1"), 0o644) }); err != nil {
		t.Fatal(err)
	}
	seg := lab.NewSegment("reals")
	seg.AddLink(lb, "eth1", "198.51.100.1/24")
	servers := map[string]*nameServer{}
	hosts := map[string]*netlab.Host{}
	var reals strings.Builder
	for i := range 3 {
		name := fmt.Sprintf("rs%d", i+1)
		h := lab.AddHost(name)
		seg.AddLink(h, "eth1", fmt.Sprintf("198.51.100.%d/24", 11+i))
		run(t, h, "ip", "route", "add", "default", "via", "198.51.100.1")
		servers[name], hosts[name] = serveName(t, h, name), h
		fmt.Fprintf(&reals, "        - {address: \"198.51.100.%d:80\"}\n", 11+i)
	}
	d := directorOn(t, lb)
	d.write(fmt.Sprintf(`    - name: web
      address: 192.0.2.50:80
      scheduler: rr
      forwarding: nat
      on_failure: %s
      check: {type: http, path: /, interval: %v, timeout: %v, rise: %d, fall: %d}
      real_servers:
%s`, onFailure, trafficInterval, trafficTimeout, trafficRise, trafficFall, reals.String()))
	d.start()
	d.waitTable([]string{"198.51.100.11:80", "198.51.100.12:80", "198.51.100.13:80"}, nil)

	c := startClient(t, client, "192.0.2.50:80", 20*time.Millisecond)
	c.waitAnswers(t, map[string]bool{"rs1": true, "rs2": true, "rs3": true}, 5*time.Second)

	// rs2 stops: out of rotation within fall x interval + timeout.
	stopped := time.Now()
	servers["rs2"].stop()
	out := func(table string) bool {
		if onFailure == "remove" {
			return !strings.Contains(table, "198.51.100.12:80")
		}
		return strings.Contains(table, "198.51.100.12:80             Masq    0")
	}
	took := d.waitTableFunc(out, 10*time.Second)
	bound := trafficFall*trafficInterval + trafficTimeout
	t.Logf("%s: rs2 out of rotation %v after it stopped (bound %v + slack %v)", onFailure, took.Sub(stopped).Round(time.Millisecond), bound, trafficSlack)
	if took.Sub(stopped) > bound+trafficSlack {
		t.Errorf("rs2 left rotation %v after it stopped, want within %v (+%v slack)", took.Sub(stopped), bound, trafficSlack)
	}
	// New connections from a moment after the change reach only rs1 and
	// rs3, and all succeed.
	settled := time.Now().Add(200 * time.Millisecond)
	time.Sleep(3 * time.Second)
	failed, answered := c.since(settled)
	if failed > 0 || answered["rs2"] > 0 || answered["rs1"] == 0 || answered["rs3"] == 0 {
		t.Errorf("after rs2 left rotation: %d failed connections, answers %v; want none failed, rs1 and rs3 only", failed, answered)
	}
	f, _ := c.since(stopped)
	t.Logf("%s: %d connections failed while rs2 was down and still in rotation", onFailure, f)

	// rs2 returns: back in rotation within rise x interval + timeout.
	returned := time.Now()
	servers["rs2"] = serveName(t, hosts["rs2"], "rs2")
	took = d.waitTableFunc(func(table string) bool { return strings.Contains(table, "198.51.100.12:80             Masq    1") }, 10*time.Second)
	bound = trafficRise*trafficInterval + trafficTimeout
	t.Logf("%s: rs2 back in rotation %v after it returned (bound %v + slack %v)", onFailure, took.Sub(returned).Round(time.Millisecond), bound, trafficSlack)
	if took.Sub(returned) > bound+trafficSlack {
		t.Errorf("rs2 returned to rotation %v after it came back, want within %v (+%v slack)", took.Sub(returned), bound, trafficSlack)
	}
	c.waitAnswers(t, map[string]bool{"rs2": true}, 5*time.Second)
	c.stop()
	d.stop()
}

func run(t *testing.T, h *netlab.Host, argv ...string) {
	t.Helper()
	if out, err := h.Run(context.Background(), argv...); err != nil {
		t.Fatalf("%s: %v: %s", h.Label, err, out)
	}
}

// waitTableFunc polls ipvsadm -Ln until ok accepts it and returns when.
func (d *director) waitTableFunc(ok func(string) bool, limit time.Duration) time.Time {
	d.t.Helper()
	deadline := time.Now().Add(limit)
	for {
		out := d.ipvsadm()
		if ok(out) {
			return time.Now()
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("ipvsadm -Ln never changed as expected:\n%s\ndirectord:\n%s", out, d.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// nameServer answers every HTTP request with its host's name.
type nameServer struct{ srv *http.Server }

func serveName(t *testing.T, h *netlab.Host, name string) *nameServer {
	t.Helper()
	var ln net.Listener
	if err := h.Do(func() (err error) { ln, err = net.Listen("tcp4", ":80"); return err }); err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	srv.SetKeepAlivesEnabled(false)
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return &nameServer{srv}
}

func (s *nameServer) stop() { s.srv.Close() }

// trafficClient opens a new connection to the VIP at a fixed pace from the
// client namespace and records who answered.
type trafficClient struct {
	mu      sync.Mutex
	results []clientResult
	done    chan struct{}
	wg      sync.WaitGroup
}

type clientResult struct {
	at  time.Time
	who string // "" when the request failed
	err error
}

func startClient(t *testing.T, h *netlab.Host, target string, every time.Duration) *trafficClient {
	c := &trafficClient{done: make(chan struct{})}
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		// Sockets are opened on this goroutine's thread, inside h.
		_ = h.Do(func() error {
			tick := time.NewTicker(every)
			defer tick.Stop()
			for {
				select {
				case <-c.done:
					return nil
				case <-tick.C:
				}
				at := time.Now()
				who, err := get(target)
				c.mu.Lock()
				c.results = append(c.results, clientResult{at, who, err})
				c.mu.Unlock()
			}
		})
	}()
	t.Cleanup(c.stop)
	return c
}

func (c *trafficClient) stop() {
	select {
	case <-c.done:
	default:
		close(c.done)
	}
	c.wg.Wait()
}

// get makes one HTTP/1.0 request on a new connection and returns the body.
func get(target string) (string, error) {
	conn, err := net.DialTimeout("tcp", target, time.Second)
	if err != nil {
		return "", err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.WriteString(conn, "GET / HTTP/1.0\r\n\r\n"); err != nil {
		return "", err
	}
	b, err := io.ReadAll(conn)
	if err != nil {
		return "", err
	}
	_, body, ok := strings.Cut(string(b), "\r\n\r\n")
	if !ok || !strings.HasPrefix(string(b), "HTTP/1.") {
		return "", fmt.Errorf("not an HTTP response: %q", b)
	}
	return body, nil
}

// since counts the failed requests started at or after from, and the
// answers per real server.
func (c *trafficClient) since(from time.Time) (failed int, answered map[string]int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	answered = map[string]int{}
	for _, r := range c.results {
		if r.at.Before(from) {
			continue
		}
		if r.err != nil {
			failed++
		} else {
			answered[r.who]++
		}
	}
	return failed, answered
}

// waitAnswers waits until every server in want has answered a request
// started after the call.
func (c *trafficClient) waitAnswers(t *testing.T, want map[string]bool, limit time.Duration) {
	t.Helper()
	from := time.Now()
	deadline := from.Add(limit)
	for {
		_, answered := c.since(from)
		ok := true
		for w := range want {
			ok = ok && answered[w] > 0
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			failed, _ := c.since(from)
			t.Fatalf("within %v, answers %v and %d failures; want answers from %v", limit, answered, failed, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
