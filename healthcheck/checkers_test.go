package healthcheck

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/config"
)

// spec is a check of type typ against ap with a 1s timeout, as config
// would produce it, adjusted by mods.
func spec(typ string, ap netip.AddrPort, mods ...func(*config.Check)) Spec {
	c := config.Check{Type: typ, Interval: 2 * time.Second, Timeout: time.Second, Rise: 2, Fall: 3}
	for _, m := range mods {
		m(&c)
	}
	return Spec{ID: "test " + ap.String(), Check: c, Addr: ap.Addr(), Port: ap.Port()}
}

func mustChecker(t *testing.T, s Spec) Checker {
	t.Helper()
	c, err := NewChecker(s)
	if err != nil {
		t.Fatalf("NewChecker(%+v): %v", s.Check, err)
	}
	return c
}

// probeOnce runs one check with the check's own timeout as the context
// deadline, as the scheduler does.
func probeOnce(t *testing.T, s Spec) Result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), s.Check.Timeout)
	defer cancel()
	return mustChecker(t, s).Check(ctx)
}

func wantResult(t *testing.T, name string, r Result, ok bool, reason string) {
	t.Helper()
	if r.OK != ok || !strings.Contains(r.Reason, reason) {
		t.Errorf("%s: got OK=%v reason %q, want OK=%v reason containing %q", name, r.OK, r.Reason, ok, reason)
	}
}

func addrPort(t *testing.T, a net.Addr) netip.AddrPort {
	t.Helper()
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		t.Fatal(err)
	}
	return ap
}

func listenTCP(t *testing.T) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln
}

// serveTCP accepts connections and hands each to h until the test ends.
func serveTCP(t *testing.T, h func(net.Conn)) netip.AddrPort {
	t.Helper()
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // cleanups run last first: after the listener closes
	ln := listenTCP(t)
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { defer c.Close(); h(c) })
		}
	})
	return addrPort(t, ln.Addr())
}

// closedPort is a loopback port nothing listens on.
func closedPort(t *testing.T, network string) netip.AddrPort {
	t.Helper()
	var a net.Addr
	if network == "udp" {
		pc, err := net.ListenPacket("udp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a = pc.LocalAddr()
		pc.Close()
	} else {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		a = ln.Addr()
		ln.Close()
	}
	return addrPort(t, a)
}

// serveUDP answers every datagram with reply(request); a nil reply is no
// answer.
func serveUDP(t *testing.T, reply func([]byte) []byte) netip.AddrPort {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { pc.Close(); <-done })
	go func() {
		defer close(done)
		buf := make([]byte, 64<<10)
		for {
			n, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			if r := reply(append([]byte(nil), buf[:n]...)); r != nil {
				pc.WriteTo(r, from)
			}
		}
	}()
	return addrPort(t, pc.LocalAddr())
}

func TestNewCheckerRefuses(t *testing.T) {
	ap := netip.MustParseAddrPort("127.0.0.1:80")
	for _, tc := range []struct {
		name string
		s    Spec
		user string
		want string
	}{
		{"unknown type", spec("ftp", ap), "", `unknown check type "ftp"`},
		{"no port", spec("tcp", netip.AddrPortFrom(ap.Addr(), 0)), "", "no port"},
		{"no address", Spec{Check: config.Check{Type: "tcp"}, Port: 80}, "", "no address"},
		{"bad regex", spec("http", ap, func(c *config.Check) { c.BodyRegex = "(" }), "", "body_regex"},
		{"bad path", spec("http", ap, func(c *config.Check) { c.Path = "healthz" }), "", "path"},
		{"bad hex", spec("udp", ap, func(c *config.Check) { c.Send = "0xzz" }), "", "send"},
		{"bad record", spec("dns", ap, func(c *config.Check) { c.Query = "example.com"; c.Record = "ANY" }), "", "record"},
		{"long label", spec("dns", ap, func(c *config.Check) { c.Query = strings.Repeat("a", 64) + ".com" }), "", "1..63"},
		{"empty query", spec("dns", ap, func(c *config.Check) { c.Query = "" }), "", "empty name"},
		{"empty command", spec("exec", ap), "", "empty command"},
		{"exec as root", spec("exec", ap, func(c *config.Check) { c.Command = []string{"/bin/true"} }), "root", "uid 0"},
		{"unknown user", spec("exec", ap, func(c *config.Check) { c.Command = []string{"/bin/true"} }), "no-such-user-directord", "look up user"},
	} {
		_, err := NewCheckerAs(tc.s, tc.user)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: got error %v, want one containing %q", tc.name, err, tc.want)
		}
	}
}

func TestNone(t *testing.T) {
	r := probeOnce(t, spec("none", netip.AddrPort{}))
	wantResult(t, "none", r, true, "")
}

func TestTCP(t *testing.T) {
	up := addrPort(t, listenTCP(t).Addr())
	down := closedPort(t, "tcp")
	wantResult(t, "listening", probeOnce(t, spec("tcp", up)), true, "connected")
	wantResult(t, "refused", probeOnce(t, spec("tcp", down)), false, "connect "+down.String()+": connection refused")

	s := spec("tcp", up)
	s.Source = netip.MustParseAddr("127.0.0.1")
	wantResult(t, "from source", probeOnce(t, s), true, "connected")
	s.Source = netip.MustParseAddr("192.0.2.99") // not a local address
	wantResult(t, "from foreign source", probeOnce(t, s), false, "bind: cannot assign requested address")
}

// blackhole is a loopback TCP port that answers no SYN: a listener with a
// full accept queue that never accepts drops new handshakes, as a host
// that routes nowhere would. (203.0.113.1 cannot stand in for it: a sandbox
// with a transparent proxy answers every outbound connection.)
func blackhole(t *testing.T) netip.AddrPort {
	t.Helper()
	_, ap := fullListener(t)
	return ap
}

// fullListener is a loopback listener with an accept queue of one
// (backlog 0), filled: it drops new SYNs until something accepts.
// The connections filling it stay open until the end of the test.
func fullListener(t *testing.T) (int, netip.AddrPort) {
	t.Helper()
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Listen(fd, 0); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	ap := netip.AddrPortFrom(netip.MustParseAddr("127.0.0.1"), uint16(sa.(*syscall.SockaddrInet4).Port))
	for range 4 {
		if c, err := net.DialTimeout("tcp", ap.String(), 100*time.Millisecond); err == nil {
			t.Cleanup(func() { c.Close() })
		}
	}
	return fd, ap
}

// TestTCPHandshakeCompletesLater: a connect that does not finish at once
// (the server's SYN-ACK comes after a retransmitted SYN) is completed
// through the connector's epoll and counts as up; so do many at once.
func TestTCPHandshakeCompletesLater(t *testing.T) {
	// The queue is full, so the probes' first SYNs are dropped; it is
	// drained meanwhile, so their SYNs retransmitted a second later
	// complete.
	fd, ap := fullListener(t)
	drained := make(chan struct{})
	go func() {
		defer close(drained)
		time.Sleep(300 * time.Millisecond)
		for {
			nfd, _, err := syscall.Accept(fd)
			if err != nil {
				return
			}
			syscall.Close(nfd)
		}
	}()
	// Before fd is closed (cleanups run last first): shutting the
	// listener down ends the accept loop, which must not go on accepting
	// on a descriptor number the next test reuses.
	t.Cleanup(func() {
		_ = syscall.Shutdown(fd, syscall.SHUT_RDWR)
		<-drained
	})
	const n = 10
	results := make(chan Result, n)
	start := time.Now()
	for range n {
		go func() {
			results <- probeOnce(t, spec("tcp", ap, func(c *config.Check) { c.Timeout = 10 * time.Second }))
		}()
	}
	waited := 0
	for range n {
		r := <-results
		wantResult(t, "late handshake", r, true, "connected")
		if r.Latency >= 500*time.Millisecond {
			waited++ // only the epoll path can take that long and succeed
		}
	}
	if waited == 0 {
		t.Fatal("no handshake waited for a retransmission, so the test proves nothing")
	}
	t.Logf("%d of %d probes completed through epoll after a retransmission, in %v", waited, n, time.Since(start))
}

// TestUnreachable: a real server that never completes the handshake fails
// the check at its timeout, with a timeout reason.
func TestUnreachable(t *testing.T) {
	ap := blackhole(t)
	for _, typ := range []string{"tcp", "http", "https"} {
		s := spec(typ, ap, func(c *config.Check) { c.Timeout = 200 * time.Millisecond })
		start := time.Now()
		r := probeOnce(t, s)
		if el := time.Since(start); el > 200*time.Millisecond+300*time.Millisecond {
			t.Errorf("%s: took %v with a 200ms timeout", typ, el)
		}
		wantResult(t, typ+" to a blackhole", r, false, "timeout after 200ms")
	}
	// The scheduler's way for tcp: a timeout instead of a deadline.
	c, ok := mustChecker(t, spec("tcp", ap)).(timedChecker)
	if !ok {
		t.Fatal("the tcp checker does not bound its probes itself")
	}
	start := time.Now()
	r := c.CheckWithin(context.Background(), 200*time.Millisecond)
	if el := time.Since(start); el < 200*time.Millisecond || el > time.Second {
		t.Errorf("tcp within 200ms: took %v", el)
	}
	wantResult(t, "tcp within 200ms to a blackhole", r, false, "timeout after 200ms")
}

func TestHTTP(t *testing.T) {
	big := strings.Repeat("x", MaxBody) + "MARKER"
	var conns atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/":
			io.WriteString(w, "all ok")
		case "/fail":
			w.WriteHeader(http.StatusServiceUnavailable)
		case "/redirect":
			http.Redirect(w, r, "/", http.StatusFound)
		case "/vhost":
			if r.Host != "www.example.com" {
				http.NotFound(w, r)
			}
		case "/query":
			if r.URL.RawQuery != "deep=1" {
				http.NotFound(w, r)
			}
		case "/big":
			io.WriteString(w, big)
		default:
			http.NotFound(w, r)
		}
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()
	ap := addrPort(t, srv.Listener.Addr())

	path := func(p string) func(*config.Check) { return func(c *config.Check) { c.Path = p } }
	for _, tc := range []struct {
		name   string
		mods   []func(*config.Check)
		ok     bool
		reason string
	}{
		{"default path, any 2xx", nil, true, "http 200"},
		{"503", []func(*config.Check){path("/fail")}, false, "http 503 from " + ap.String()},
		{"503 expected", []func(*config.Check){path("/fail"), func(c *config.Check) { c.ExpectStatus = []int{200, 503} }}, true, "http 503"},
		{"200 not in expect_status", []func(*config.Check){func(c *config.Check) { c.ExpectStatus = []int{204} }}, false, "http 200 from"},
		{"redirect not followed", []func(*config.Check){path("/redirect")}, false, "http 302 from"},
		{"redirect expected", []func(*config.Check){path("/redirect"), func(c *config.Check) { c.ExpectStatus = []int{302} }}, true, "http 302"},
		{"body matches", []func(*config.Check){func(c *config.Check) { c.BodyRegex = "ok$" }}, true, "body matches"},
		{"body mismatch", []func(*config.Check){func(c *config.Check) { c.BodyRegex = "^nope" }}, false, `body does not match "^nope"`},
		{"match past MaxBody not read", []func(*config.Check){path("/big"), func(c *config.Check) { c.BodyRegex = "MARKER" }}, false, `body does not match "MARKER"`},
		{"host header", []func(*config.Check){path("/vhost"), func(c *config.Check) { c.Host = "www.example.com" }}, true, "http 200"},
		{"no host header", []func(*config.Check){path("/vhost")}, false, "http 404"},
		{"query string kept", []func(*config.Check){path("/query?deep=1")}, true, "http 200"},
	} {
		r := probeOnce(t, spec("http", ap, tc.mods...))
		wantResult(t, tc.name, r, tc.ok, tc.reason)
	}

	// No keep-alive: every probe opened its own connection.
	before := conns.Load()
	c := mustChecker(t, spec("http", ap))
	for range 3 {
		wantResult(t, "repeat", c.Check(context.Background()), true, "http 200")
	}
	if got := conns.Load() - before; got != 3 {
		t.Errorf("3 probes opened %d connections, want 3 (no keep-alive)", got)
	}
}

func TestHTTPS(t *testing.T) {
	var sni atomic.Value
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sni.Store(r.TLS.ServerName)
		io.WriteString(w, "secure ok")
	}))
	defer srv.Close()
	ap := addrPort(t, srv.Listener.Addr())

	// httptest's certificate is signed by a CA the system does not trust.
	r := probeOnce(t, spec("https", ap))
	wantResult(t, "verification on by default", r, false, "tls: ")

	skip := func(c *config.Check) { c.TLSSkipVerify = true }
	r = probeOnce(t, spec("https", ap, skip, func(c *config.Check) { c.BodyRegex = "secure" }))
	wantResult(t, "tls_skip_verify", r, true, "body matches")

	r = probeOnce(t, spec("https", ap, skip, func(c *config.Check) { c.Host = "example.com" }))
	wantResult(t, "sni", r, true, "http 200")
	if got, _ := sni.Load().(string); got != "example.com" {
		t.Errorf("SNI %q, want example.com (check.host)", got)
	}

	// An https check of a plain-HTTP server fails the handshake.
	plain := httptest.NewServer(http.NotFoundHandler())
	defer plain.Close()
	r = probeOnce(t, spec("https", addrPort(t, plain.Listener.Addr()), skip))
	wantResult(t, "https to plain http", r, false, "")
}

// TestHTTPTimeout: a server that accepts and never answers fails the check
// at its timeout, not later.
func TestHTTPTimeout(t *testing.T) {
	ap := serveTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	s := spec("http", ap, func(c *config.Check) { c.Timeout = 300 * time.Millisecond })
	start := time.Now()
	r := probeOnce(t, s)
	if el := time.Since(start); el > 300*time.Millisecond+300*time.Millisecond {
		t.Errorf("took %v with a 300ms timeout", el)
	}
	wantResult(t, "silent server", r, false, "timeout after 300ms")

	// A caller's shorter deadline wins and is what the reason names.
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	r = mustChecker(t, s).Check(ctx)
	if r.OK || !strings.HasPrefix(r.Reason, "timeout after 10") && !strings.HasPrefix(r.Reason, "timeout after 9") {
		t.Errorf("caller deadline 100ms: got OK=%v reason %q", r.OK, r.Reason)
	}
}

func TestHTTPGarbage(t *testing.T) {
	for name, junk := range map[string]string{
		"junk":             "junk\r\n\r\n",
		"binary":           "\x00\xff\x16\x03\x01garbage",
		"truncated status": "HTTP/1.1 2",
		"close at once":    "",
	} {
		ap := serveTCP(t, func(c net.Conn) {
			io.WriteString(c, junk)
		})
		for _, typ := range []string{"http", "https"} {
			r := probeOnce(t, spec(typ, ap, func(c *config.Check) { c.TLSSkipVerify = typ == "https" }))
			if r.OK || r.Reason == "" {
				t.Errorf("%s to %s server: got OK=%v reason %q, want a failure with a reason", typ, name, r.OK, r.Reason)
			}
		}
	}
}

func TestUDP(t *testing.T) {
	echo := serveUDP(t, func(b []byte) []byte { return b })
	silent := serveUDP(t, func([]byte) []byte { return nil })
	closed := closedPort(t, "udp")
	short := func(c *config.Check) { c.Timeout = 200 * time.Millisecond }
	send := func(p, e string) func(*config.Check) {
		return func(c *config.Check) { c.Send, c.Expect = p, e }
	}
	for _, tc := range []struct {
		name   string
		ap     netip.AddrPort
		mods   []func(*config.Check)
		ok     bool
		reason string
	}{
		{"any reply", echo, []func(*config.Check){send("ping", "")}, true, "reply from"},
		{"reply contains", echo, []func(*config.Check){send("ping pong", "pong")}, true, "reply from"},
		{"reply lacks", echo, []func(*config.Check){send("ping", "pong")}, false, `does not contain "pong"`},
		{"hex payload", echo, []func(*config.Check){send("0xdeadbeef", "0xbeef")}, true, "reply from"},
		{"hex mismatch", echo, []func(*config.Check){send("0xdeadbeef", "0xbeefbeef")}, false, `does not contain "0xbeefbeef"`},
		{"silent", silent, []func(*config.Check){send("ping", ""), short}, false, "no reply from " + silent.String() + ": timeout after 200ms"},
		{"port unreachable", closed, []func(*config.Check){send("ping", ""), short}, false, "no reply from " + closed.String()},
	} {
		wantResult(t, tc.name, probeOnce(t, spec("udp", tc.ap, tc.mods...)), tc.ok, tc.reason)
	}
}

// dnsResponder answers "ok.example" A with 192.0.2.1, "fail.example" with
// SERVFAIL, and everything else with an empty NOERROR (RFC 1035 4.1).
func dnsResponder(q []byte) []byte {
	if len(q) < 12 {
		return nil
	}
	var labels []string
	i := 12
	for i < len(q) && q[i] != 0 {
		n := int(q[i])
		if i+1+n > len(q) {
			return nil
		}
		labels = append(labels, string(q[i+1:i+1+n]))
		i += 1 + n
	}
	if i+5 > len(q) {
		return nil
	}
	qend := i + 5
	name, qtype := strings.Join(labels, "."), binary.BigEndian.Uint16(q[i+1:])
	r := append([]byte(nil), q[:qend]...)
	binary.BigEndian.PutUint16(r[2:], 0x8180) // QR RD RA, NOERROR
	switch {
	case name == "fail.example":
		r[3] |= 2 // SERVFAIL
	case name == "ok.example" && qtype == 1:
		binary.BigEndian.PutUint16(r[6:], 1)
		r = append(r, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 1)
	}
	return r
}

func TestDNS(t *testing.T) {
	ap := serveUDP(t, dnsResponder)
	q := func(name, rec string) func(*config.Check) {
		return func(c *config.Check) { c.Query, c.Record = name, rec }
	}
	for _, tc := range []struct {
		name   string
		mod    func(*config.Check)
		ok     bool
		reason string
	}{
		{"answer", q("ok.example", ""), true, "1 answers for ok.example A"},
		{"fqdn, lower-case record", q("ok.example.", "a"), true, "1 answers"},
		{"servfail", q("fail.example", "A"), false, "dns SERVFAIL"},
		{"no answer", q("empty.example", "A"), false, "no answer for empty.example A"},
		{"no answer of that type", q("ok.example", "aaaa"), false, "no answer for ok.example AAAA"},
	} {
		wantResult(t, tc.name, probeOnce(t, spec("dns", ap, tc.mod)), tc.ok, tc.reason)
	}
}

// TestDNSGarbage: a server replying random bytes fails the check; it never
// panics or passes.
func TestDNSGarbage(t *testing.T) {
	ap := serveUDP(t, func(q []byte) []byte {
		b := make([]byte, len(q)%40) // 0..39 bytes: short and full headers
		rand.Read(b)
		return b
	})
	c := mustChecker(t, spec("dns", ap, func(c *config.Check) { c.Query = "ok.example" }))
	for i := range 50 {
		// Vary the reply length through the query length.
		c := c
		if i%2 == 1 {
			c = mustChecker(t, spec("dns", ap, func(c *config.Check) { c.Query = strings.Repeat("a", i) + ".example" }))
		}
		r := c.Check(context.Background())
		if r.OK || r.Reason == "" {
			t.Fatalf("garbage reply: got OK=%v reason %q", r.OK, r.Reason)
		}
	}
}

func TestDNSQueryWire(t *testing.T) {
	q, err := dnsName("www.example.com.")
	if err != nil {
		t.Fatal(err)
	}
	got := dnsQuery(0xbeef, append(q, 0, 28, 0, 1))
	want := []byte{
		0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, // id, RD, QDCOUNT 1
		3, 'w', 'w', 'w', 7, 'e', 'x', 'a', 'm', 'p', 'l', 'e', 3, 'c', 'o', 'm', 0,
		0, 28, 0, 1, // AAAA IN
	}
	if string(got) != string(want) {
		t.Errorf("query\n got %x\nwant %x", got, want)
	}
	if root, _ := dnsName("."); string(root) != "\x00" {
		t.Errorf("root name encodes as %x, want 00", root)
	}
}

func FuzzDNSReply(f *testing.F) {
	f.Add([]byte{0xbe, 0xef, 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0}, uint16(0xbeef))
	f.Add([]byte{}, uint16(0))
	f.Add([]byte{1, 2, 3}, uint16(0x0102))
	f.Fuzz(func(t *testing.T, b []byte, id uint16) {
		rc, an, err := dnsReply(b, id)
		if err == nil && (len(b) < 12 || rc > 15 || an > 0xffff || an < 0) {
			t.Errorf("dnsReply(%x) = %d, %d, nil", b, rc, an)
		}
	})
}

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("exec checks run as nobody; switching users needs root")
	}
}

func TestExec(t *testing.T) {
	requireRoot(t)
	ap := netip.MustParseAddrPort("127.0.0.1:8080")
	sh := func(script string, dynamic bool) func(*config.Check) {
		return func(c *config.Check) { c.Command, c.DynamicWeight = []string{"/bin/sh", "-c", script}, dynamic }
	}
	for _, tc := range []struct {
		name      string
		mod       func(*config.Check)
		ok        bool
		reason    string
		weightSet bool
		weight    int
	}{
		{"exit 0", sh("exit 0", false), true, "exit 0", false, 0},
		{"exit 1", sh("echo backend gone; exit 1", false), false, "exit 1: backend gone", false, 0},
		{"exit 5 plain", sh("exit 5", false), false, "exit 5", false, 0},
		{"exit 5 dynamic", sh("exit 5", true), true, "weight 3", true, 3},
		{"exit 2 dynamic", sh("exit 2", true), true, "weight 0", true, 0},
		{"exit 1 dynamic", sh("exit 1", true), false, "exit 1", false, 0},
		{"exit 0 dynamic", sh("exit 0", true), true, "exit 0", false, 0},
		{"env", sh(`test "$DIRECTORD_CHECK_ADDR" = 127.0.0.1 && test "$DIRECTORD_CHECK_PORT" = 8080`, false), true, "exit 0", false, 0},
		{"runs as nobody", sh(`test "$(id -un)" = nobody`, false), true, "exit 0", false, 0},
		{"no such program", func(c *config.Check) { c.Command = []string{"/nonexistent/check"} }, false, "no such file or directory", false, 0},
	} {
		r := probeOnce(t, spec("exec", ap, tc.mod))
		wantResult(t, tc.name, r, tc.ok, tc.reason)
		if r.WeightSet != tc.weightSet || r.Weight != tc.weight {
			t.Errorf("%s: weight %d set %v, want %d set %v", tc.name, r.Weight, r.WeightSet, tc.weight, tc.weightSet)
		}
	}
}

// TestExecTimeoutKillsGroup: a script that hangs, with a child of its own,
// fails at the timeout and neither it nor the child survives.
func TestExecTimeoutKillsGroup(t *testing.T) {
	requireRoot(t)
	marker := fmt.Sprintf("%d.%d", 600+os.Getpid()%100, time.Now().Nanosecond()%1000000)
	s := spec("exec", netip.MustParseAddrPort("127.0.0.1:80"), func(c *config.Check) {
		c.Timeout = 300 * time.Millisecond
		c.Command = []string{"/bin/sh", "-c", "sleep " + marker + " & sleep " + marker + "; wait"}
	})
	start := time.Now()
	r := probeOnce(t, s)
	if el := time.Since(start); el > 300*time.Millisecond+700*time.Millisecond {
		t.Errorf("took %v with a 300ms timeout", el)
	}
	wantResult(t, "hanging script", r, false, "timeout after 300ms")

	deadline := time.Now().Add(2 * time.Second)
	for {
		left := processesWith(t, marker)
		if left == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d processes running %q survived the timeout", left, "sleep "+marker)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// processesWith counts live processes whose command line contains s.
func processesWith(t *testing.T, s string) int {
	t.Helper()
	cmdlines, err := filepath.Glob("/proc/[0-9]*/cmdline")
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, p := range cmdlines {
		b, err := os.ReadFile(p)
		if err == nil && strings.Contains(string(b), s) { // zombies read empty
			n++
		}
	}
	return n
}

// TestNoGoroutineLeak: 100 checks of every network kind leave no goroutine
// behind (the Checker contract: nothing kept after Check returns).
func TestNoGoroutineLeak(t *testing.T) {
	httpSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer httpSrv.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok") }))
	defer tlsSrv.Close()
	silent := serveTCP(t, func(c net.Conn) { io.Copy(io.Discard, c) })
	echo := serveUDP(t, func(b []byte) []byte { return b })
	dns := serveUDP(t, dnsResponder)
	tcp := addrPort(t, listenTCP(t).Addr())

	short := func(c *config.Check) { c.Timeout = 50 * time.Millisecond }
	checkers := []Checker{
		mustChecker(t, spec("tcp", tcp)),
		mustChecker(t, spec("http", addrPort(t, httpSrv.Listener.Addr()), func(c *config.Check) { c.BodyRegex = "ok" })),
		mustChecker(t, spec("https", addrPort(t, tlsSrv.Listener.Addr()), func(c *config.Check) { c.TLSSkipVerify = true })),
		mustChecker(t, spec("https", addrPort(t, tlsSrv.Listener.Addr()))), // verification fails
		mustChecker(t, spec("http", silent, short)),                        // times out
		mustChecker(t, spec("udp", echo, func(c *config.Check) { c.Send = "x" })),
		mustChecker(t, spec("dns", dns, func(c *config.Check) { c.Query = "ok.example" })),
	}
	// Warm up: the first TLS handshake and the servers start goroutines of
	// their own that stay.
	for _, c := range checkers {
		c.Check(context.Background())
	}
	time.Sleep(100 * time.Millisecond)
	base := runtime.NumGoroutine()

	for i := range 100 {
		checkers[i%len(checkers)].Check(context.Background())
	}
	waitGoroutines(t, base)
}
