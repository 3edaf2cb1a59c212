package healthcheck

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/directord/directord/internal/command"
	"github.com/directord/directord/internal/config"
)

// MaxBody is how much of an HTTP response body a check reads and matches
// against body_regex. A health page larger than this is cut, not streamed:
// a check must not pull a large download on every interval.
const MaxBody = 64 << 10

// fallbackTimeout bounds a probe whose context has no deadline and whose
// check has no timeout (a Spec built by hand); config always sets one.
const fallbackTimeout = time.Second

// NewChecker builds the checker for s.Check.Type. Everything that can be
// refused without probing is refused here (a bad regex, a bad payload, a
// query name that does not encode, a missing port), so a Checker never
// fails for a reason that is not the real server's. Exec checks run as
// command.DefaultUser ("nobody"); use NewCheckerAs to name another user.
func NewChecker(s Spec) (Checker, error) {
	return NewCheckerAs(s, "")
}

// NewCheckerAs is NewChecker with the user exec checks run as; "" means
// command.DefaultUser. Exec checks never run as root: a user with uid 0 is
// refused. Other check types ignore execUser.
func NewCheckerAs(s Spec, execUser string) (Checker, error) {
	c, err := buildChecker(s, execUser)
	if err != nil {
		return nil, fmt.Errorf("check %s: %w", s.ID, err)
	}
	return c, nil
}

func buildChecker(s Spec, execUser string) (Checker, error) {
	p := probe{spec: s, target: netip.AddrPortFrom(s.Addr, s.Port).String()}
	switch s.Check.Type {
	case "none":
		return noneChecker{}, nil
	case "exec":
		return newExecChecker(p, execUser)
	case "tcp", "http", "https", "udp", "dns":
	default:
		return nil, fmt.Errorf("unknown check type %q", s.Check.Type)
	}
	if !s.Addr.IsValid() {
		return nil, fmt.Errorf("%s check: no address to probe", s.Check.Type)
	}
	if s.Port == 0 {
		return nil, fmt.Errorf("%s check of %s: no port to probe", s.Check.Type, s.Addr)
	}
	switch s.Check.Type {
	case "tcp":
		var laddr netip.AddrPort
		if s.Source.IsValid() {
			laddr = netip.AddrPortFrom(s.Source, 0)
		}
		return newTCPChecker(p, netip.AddrPortFrom(s.Addr, s.Port), laddr), nil
	case "http", "https":
		return newHTTPChecker(p)
	case "udp":
		return newUDPChecker(p)
	default:
		return newDNSChecker(p)
	}
}

// probe holds what every network checker shares: the spec, the target as
// text for reasons, and how to bound and describe a probe's time.
type probe struct {
	spec   Spec
	target string // "198.51.100.11:80", "[2001:db8::1]:53"
}

// bound returns ctx limited to the check's timeout as well as its own
// deadline, and the label a timeout reason uses ("1s").
func (p probe) bound(ctx context.Context) (context.Context, context.CancelFunc, string) {
	d := p.spec.Check.Timeout
	if d <= 0 {
		d = fallbackTimeout
	}
	label := d.String()
	if dl, ok := ctx.Deadline(); ok {
		if left := time.Until(dl); left <= d {
			// The caller's deadline is the check's timeout less the
			// moments since it was set (the scheduler's way): the reason
			// names the timeout. A notably shorter one names what was
			// left.
			if left < d-d/10 {
				label = max(left, 0).Round(time.Millisecond).String()
			}
			// The caller's deadline comes first (the scheduler gives
			// each probe the check's timeout): no second timer.
			return ctx, func() {}, label
		}
	}
	ctx, cancel := context.WithTimeout(ctx, d)
	return ctx, cancel, label
}

func (p probe) dialer(network string) *net.Dialer {
	// No TCP keepalive: a probe's connection lives for one exchange, and
	// its setsockopt calls would cost more than the rest of a tcp probe.
	d := &net.Dialer{KeepAlive: -1}
	if p.spec.Source.IsValid() {
		src := netip.AddrPortFrom(p.spec.Source, 0)
		if network == "udp" {
			d.LocalAddr = net.UDPAddrFromAddrPort(src)
		} else {
			d.LocalAddr = net.TCPAddrFromAddrPort(src)
		}
	}
	return d
}

// failure turns a network error into a reason: "connect 198.51.100.11:80:
// connection refused", "timeout after 1s". op names the step that failed.
func (p probe) failure(ctx context.Context, op string, err error, timeout string) string {
	if errors.Is(ctx.Err(), context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return "timeout after " + timeout
	}
	if ctx.Err() != nil {
		return op + " " + p.target + ": canceled"
	}
	var se *os.SyscallError
	if errors.As(err, &se) {
		if se.Syscall == "connect" || se.Syscall == "read" || se.Syscall == "write" {
			return fmt.Sprintf("%s %s: %v", op, p.target, se.Err)
		}
		return fmt.Sprintf("%s %s: %s: %v", op, p.target, se.Syscall, se.Err)
	}
	var oe *net.OpError
	if errors.As(err, &oe) {
		return fmt.Sprintf("%s %s: %v", op, p.target, oe.Err)
	}
	return fmt.Sprintf("%s %s: %v", op, p.target, err)
}

// stopOnDone makes a context's cancellation (not only its deadline) end
// blocking I/O on conn. The returned func must be called before returning.
func stopOnDone(ctx context.Context, conn net.Conn) func() bool {
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	return context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Unix(1, 0)) })
}

type noneChecker struct{}

// Check always succeeds: a "none" check leaves the real server up.
func (noneChecker) Check(context.Context) Result {
	return Result{OK: true, Reason: "not checked (type none)"}
}

type httpChecker struct {
	probe
	client *http.Client
	url    string
	host   string
	body   *regexp.Regexp
	expect []int
}

func newHTTPChecker(p probe) (*httpChecker, error) {
	chk := p.spec.Check
	var body *regexp.Regexp
	if chk.BodyRegex != "" {
		re, err := regexp.Compile(chk.BodyRegex)
		if err != nil {
			return nil, fmt.Errorf("body_regex: %w", err)
		}
		body = re
	}
	path := chk.Path
	if path == "" {
		path = "/"
	}
	pu, err := url.Parse(path)
	if err != nil || !strings.HasPrefix(path, "/") {
		return nil, fmt.Errorf("path %q: not an absolute URL path", path)
	}
	u := &url.URL{Scheme: chk.Type, Host: p.target, Path: pu.Path, RawPath: pu.RawPath, RawQuery: pu.RawQuery}
	serverName := chk.Host
	if serverName == "" {
		serverName = p.spec.Addr.WithZone("").String()
	}
	tr := &http.Transport{
		Proxy: nil, // never the daemon's HTTP_PROXY: probe the real server itself
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			// Always the real server, whatever Host says.
			return p.dialer("tcp").DialContext(ctx, "tcp", p.target)
		},
		TLSClientConfig: &tls.Config{
			ServerName:         serverName,
			InsecureSkipVerify: chk.TLSSkipVerify, //nolint:gosec // opt-in per check (tls_skip_verify)
		},
		// Each probe is a fresh connection, closed after the response,
		// so a check sees a real server's accept path and holds no socket
		// between intervals.
		DisableKeepAlives:      true,
		DisableCompression:     true,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &httpChecker{
		probe: p,
		client: &http.Client{
			Transport: tr,
			// A 3xx is the real server's answer, judged by expect_status.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		},
		url:    u.String(),
		host:   chk.Host,
		body:   body,
		expect: chk.ExpectStatus,
	}, nil
}

// Check sends one GET and judges its status and (with body_regex) the first
// MaxBody bytes of its body.
func (c *httpChecker) Check(ctx context.Context) Result {
	start := time.Now()
	ctx, cancel, label := c.bound(ctx)
	defer cancel()
	res := c.check(ctx, label)
	res.Latency = time.Since(start)
	return res
}

func (c *httpChecker) check(ctx context.Context, label string) Result {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, c.url, nil)
	if err != nil {
		return Result{Reason: "http request: " + err.Error()}
	}
	if c.host != "" {
		req.Host = c.host
	}
	req.Header.Set("User-Agent", "directord-healthcheck")
	req.Close = true
	resp, err := c.client.Do(req)
	if err != nil {
		return Result{Reason: c.httpFailure(ctx, err, label)}
	}
	defer resp.Body.Close()
	if !c.statusOK(resp.StatusCode) {
		return Result{Reason: fmt.Sprintf("http %d from %s", resp.StatusCode, c.target)}
	}
	if c.body == nil {
		return Result{OK: true, Reason: fmt.Sprintf("http %d from %s", resp.StatusCode, c.target)}
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxBody))
	if err != nil {
		return Result{Reason: c.httpFailure(ctx, err, label)}
	}
	if !c.body.Match(b) {
		return Result{Reason: fmt.Sprintf("body does not match %q", c.body.String())}
	}
	return Result{OK: true, Reason: fmt.Sprintf("http %d from %s, body matches", resp.StatusCode, c.target)}
}

func (c *httpChecker) statusOK(code int) bool {
	if len(c.expect) == 0 {
		return code >= 200 && code <= 299
	}
	for _, e := range c.expect {
		if code == e {
			return true
		}
	}
	return false
}

func (c *httpChecker) httpFailure(ctx context.Context, err error, label string) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return c.failure(ctx, "connect", err, label)
	}
	if r := c.failure(ctx, "http", err, label); strings.HasPrefix(r, "timeout") {
		return r
	}
	var cv *tls.CertificateVerificationError
	var re tls.RecordHeaderError
	var ae tls.AlertError
	if errors.As(err, &cv) || errors.As(err, &re) || errors.As(err, &ae) || strings.HasPrefix(err.Error(), "tls:") {
		return err.Error()
	}
	return c.failure(ctx, "http", err, label)
}

type udpChecker struct {
	probe
	send, expect []byte
}

func newUDPChecker(p probe) (*udpChecker, error) {
	send, err := config.Payload(p.spec.Check.Send)
	if err != nil {
		return nil, fmt.Errorf("send: %w", err)
	}
	expect, err := config.Payload(p.spec.Check.Expect)
	if err != nil {
		return nil, fmt.Errorf("expect: %w", err)
	}
	return &udpChecker{probe: p, send: send, expect: expect}, nil
}

// Check sends the payload once and waits for one reply, which must contain
// expect when it is set.
func (c *udpChecker) Check(ctx context.Context) Result {
	start := time.Now()
	ctx, cancel, label := c.bound(ctx)
	defer cancel()
	reply, reason := c.exchange(ctx, c.send, label)
	res := Result{Reason: reason, Latency: time.Since(start)}
	if reason != "" {
		return res
	}
	if len(c.expect) > 0 && !bytes.Contains(reply, c.expect) {
		res.Reason = fmt.Sprintf("reply from %s does not contain %q", c.target, c.spec.Check.Expect)
		return res
	}
	res.OK, res.Reason = true, "reply from "+c.target
	return res
}

// exchange sends msg on a fresh connected UDP socket and returns the first
// datagram that comes back, or a reason.
func (p probe) exchange(ctx context.Context, msg []byte, label string) ([]byte, string) {
	conn, err := p.dialer("udp").DialContext(ctx, "udp", p.target)
	if err != nil {
		return nil, p.failure(ctx, "send to", err, label)
	}
	defer conn.Close()
	stop := stopOnDone(ctx, conn)
	defer stop()
	if _, err := conn.Write(msg); err != nil {
		return nil, p.failure(ctx, "send to", err, label)
	}
	buf := make([]byte, 64<<10)
	n, err := conn.Read(buf)
	if err != nil {
		r := p.failure(ctx, "no reply from", err, label)
		if strings.HasPrefix(r, "timeout") {
			r = "no reply from " + p.target + ": " + r
		}
		return nil, r
	}
	return buf[:n], ""
}

// DNS record types a dns check may query (RFC 1035 3.2.2, RFC 3596, RFC 2782).
var dnsTypes = map[string]uint16{
	"A": 1, "NS": 2, "CNAME": 5, "SOA": 6, "PTR": 12, "MX": 15, "TXT": 16, "AAAA": 28, "SRV": 33,
}

var dnsRcodes = [...]string{"NOERROR", "FORMERR", "SERVFAIL", "NXDOMAIN", "NOTIMP", "REFUSED"}

type dnsChecker struct {
	probe
	question []byte // QNAME QTYPE QCLASS, RFC 1035 4.1.2
	what     string // "example.com A", for reasons
}

func newDNSChecker(p probe) (*dnsChecker, error) {
	rec := strings.ToUpper(p.spec.Check.Record)
	if rec == "" {
		rec = "A"
	}
	qtype, ok := dnsTypes[rec]
	if !ok {
		return nil, fmt.Errorf("record %q: not one of A AAAA CNAME MX NS PTR SOA SRV TXT", p.spec.Check.Record)
	}
	q, err := dnsName(p.spec.Check.Query)
	if err != nil {
		return nil, fmt.Errorf("query %q: %w", p.spec.Check.Query, err)
	}
	q = binary.BigEndian.AppendUint16(q, qtype)
	q = binary.BigEndian.AppendUint16(q, 1) // class IN
	return &dnsChecker{probe: p, question: q, what: p.spec.Check.Query + " " + rec}, nil
}

// dnsName encodes name as a sequence of length-prefixed labels (RFC 1035
// 3.1). Names are taken as written: no escapes, no IDNA.
func dnsName(name string) ([]byte, error) {
	if name == "" {
		return nil, errors.New("empty name")
	}
	name = strings.TrimSuffix(name, ".")
	var b []byte
	if name != "" {
		for _, l := range strings.Split(name, ".") {
			if len(l) == 0 || len(l) > 63 {
				return nil, fmt.Errorf("label %q: must be 1..63 bytes", l)
			}
			b = append(b, byte(len(l)))
			b = append(b, l...)
		}
	}
	b = append(b, 0)
	if len(b) > 255 {
		return nil, errors.New("longer than 255 bytes")
	}
	return b, nil
}

// dnsQuery builds a standard recursive query with one question (RFC 1035
// 4.1.1): the server may be a resolver or an authoritative server, and
// both answer a query with RD set.
func dnsQuery(id uint16, question []byte) []byte {
	m := make([]byte, 12, 12+len(question))
	binary.BigEndian.PutUint16(m[0:], id)
	binary.BigEndian.PutUint16(m[2:], 0x0100) // RD
	binary.BigEndian.PutUint16(m[4:], 1)      // QDCOUNT
	return append(m, question...)
}

// dnsReply reads the header of a reply to query id: its RCODE and ANCOUNT.
func dnsReply(b []byte, id uint16) (rcode int, answers int, err error) {
	if len(b) < 12 {
		return 0, 0, fmt.Errorf("short dns reply (%d bytes)", len(b))
	}
	if got := binary.BigEndian.Uint16(b[0:]); got != id {
		return 0, 0, fmt.Errorf("dns reply has id %d, want %d", got, id)
	}
	flags := binary.BigEndian.Uint16(b[2:])
	if flags&0x8000 == 0 {
		return 0, 0, errors.New("dns reply is not a response (QR clear)")
	}
	return int(flags & 0x000f), int(binary.BigEndian.Uint16(b[6:])), nil
}

func rcodeName(rc int) string {
	if rc < len(dnsRcodes) {
		return dnsRcodes[rc]
	}
	return "RCODE " + strconv.Itoa(rc)
}

// Check sends one query over UDP; a NOERROR reply with at least one answer
// is up.
func (c *dnsChecker) Check(ctx context.Context) Result {
	start := time.Now()
	ctx, cancel, label := c.bound(ctx)
	defer cancel()
	id := uint16(rand.Uint32())
	reply, reason := c.exchange(ctx, dnsQuery(id, c.question), label)
	res := Result{Reason: reason, Latency: time.Since(start)}
	if reason != "" {
		return res
	}
	rc, an, err := dnsReply(reply, id)
	switch {
	case err != nil:
		res.Reason = fmt.Sprintf("%v from %s", err, c.target)
	case rc != 0:
		res.Reason = "dns " + rcodeName(rc)
	case an == 0:
		res.Reason = "no answer for " + c.what
	default:
		res.OK, res.Reason = true, fmt.Sprintf("%d answers for %s", an, c.what)
	}
	return res
}

type execChecker struct {
	probe
	argv    []string
	user    string
	dynamic bool
	env     []string
}

func newExecChecker(p probe, user string) (*execChecker, error) {
	if len(p.spec.Check.Command) == 0 || p.spec.Check.Command[0] == "" {
		return nil, errors.New("exec check: empty command")
	}
	if user == "" {
		u, err := command.DefaultUser()
		if err != nil {
			return nil, fmt.Errorf("exec check: %w", err)
		}
		user = u
	}
	uid, _, err := command.LookupUser(user)
	if err != nil {
		return nil, fmt.Errorf("exec check: %w", err)
	}
	if uid == 0 {
		return nil, fmt.Errorf("exec check: refusing to run as %q (uid 0)", user)
	}
	var env []string
	if p.spec.Addr.IsValid() {
		env = append(env, "DIRECTORD_CHECK_ADDR="+p.spec.Addr.String())
	}
	env = append(env, "DIRECTORD_CHECK_PORT="+strconv.Itoa(int(p.spec.Port)))
	return &execChecker{probe: p, argv: p.spec.Check.Command, user: user, dynamic: p.spec.Check.DynamicWeight, env: env}, nil
}

// Check runs the command once. Exit 0 is up; with dynamic_weight, exit N in
// 2..255 is up with weight N-2 (keepalived misc_dynamic); anything else is
// down. On timeout the command's whole process group is killed.
func (c *execChecker) Check(ctx context.Context) Result {
	ctx, cancel, label := c.bound(ctx)
	defer cancel()
	var timeout time.Duration
	if dl, ok := ctx.Deadline(); ok {
		timeout = max(time.Until(dl), time.Nanosecond)
	}
	r := command.Run(ctx, command.Spec{Argv: c.argv, User: c.user, Timeout: timeout, Env: c.env})
	res := Result{Latency: r.Duration}
	switch {
	case r.Err != nil:
		res.Reason = r.Err.Error()
	case r.TimedOut || (r.Signal != "" && errors.Is(ctx.Err(), context.DeadlineExceeded)):
		res.Reason = "timeout after " + label
	case r.Signal != "":
		res.Reason = "killed by " + r.Signal
	case r.ExitCode == 0:
		res.OK, res.Reason = true, "exit 0"
	case c.dynamic && r.ExitCode >= 2 && r.ExitCode <= 255:
		res.OK, res.Reason = true, fmt.Sprintf("exit %d: weight %d", r.ExitCode, r.ExitCode-2)
		res.Weight, res.WeightSet = r.ExitCode-2, true
	default:
		res.Reason = fmt.Sprintf("exit %d", r.ExitCode)
		if line := lastLine(r.Output); line != "" {
			res.Reason += ": " + line
		}
	}
	return res
}

// lastLine is the last non-empty line of a script's output, cut to 200
// bytes: usually the line that says why it failed.
func lastLine(out []byte) string {
	s := strings.TrimSpace(string(out))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = strings.TrimSpace(s[i+1:])
	}
	if len(s) > 200 {
		s = s[:200]
	}
	return strings.ToValidUTF8(s, "?")
}
