//go:build vmguest

package e2e

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
)

// The lab:
//
//	client 192.0.2.100 ──┐
//	rs1..3 192.0.2.21..  ┤ LAN 192.0.2.0/24, VIP 192.0.2.50: DR :80, NAT :8080
//	sorry  192.0.2.30    ┤ (DR real servers and the DR sorry server hold the
//	lb1 .11, lb2 .12    ─┘  VIP on lo, arp_ignore=1, arp_announce=2)
//	lb1 203.0.113.11, lb2 .12   segment "sync": the kernel's sync daemons
//	lb1 198.51.100.2, lb2 .3 ─┐ segment "reals" 198.51.100.0/24; gateway
//	nrs1..3 198.51.100.11..   ┤ 198.51.100.1 is the second VIP, held by the
//	nsorry  198.51.100.30    ─┘ VRRP master, so NAT replies follow the master
//
// lb1 (priority 150) is master, lb2 (100) backup; adverts every
// labAdvert; connection sync follows the VRRP instance. Every real server
// serves HTTP: "/" answers its name, /healthz is for the checks.
const (
	labVIP     = "192.0.2.50"
	labGateway = "198.51.100.1"
	labAdvert  = 300 * time.Millisecond
	// labPreemptDelay gives a returning master time to receive the
	// connection table from the sync daemon before it takes over.
	labPreemptDelay = 3 * time.Second
	// labCheck is the health checks' interval and timeout: the emulated
	// guest, busy with the load, can take several hundred milliseconds to
	// answer a probe.
	labCheck = time.Second
)

// masterDown is RFC 5798's Master_Down_Interval of lb2 (priority 100):
// 3 × Advertisement_Interval + Skew_Time.
func masterDown() time.Duration {
	return 3*labAdvert + time.Duration(256-100)*labAdvert/256
}

// binDir holds directord and directorctl: /bin in the guest.
func binDir() string {
	if d := os.Getenv("DIRECTORD_E2E_BIN"); d != "" {
		return d
	}
	return "/bin"
}

// lab is the topology with its servers; the directors are swapped per
// implementation (directord, keepalived).
type lab struct {
	t        *testing.T
	nl       *netlab.Lab
	client   *netlab.Host
	lbh      [2]*netlab.Host
	reals    []*realServer // rs1..3 (DR), nrs1..3 (NAT)
	sorry    []*realServer
	syncSeg  *netlab.Segment
	realsSeg *netlab.Segment
	// metrics gives the directors a metrics listener (directord).
	metrics bool
}

func newLab(t *testing.T) *lab {
	t.Helper()
	l := &lab{t: t, nl: netlab.New(t)}
	l.client = l.nl.AddHost("client", "192.0.2.100/24")
	l.syncSeg = l.nl.NewSegment("sync")
	l.realsSeg = l.nl.NewSegment("reals")
	drHost := func(name, addr string) *netlab.Host {
		h := l.nl.AddHost(name, addr+"/24")
		for _, dev := range []string{"all", "eth0"} {
			run(t, h, "sysctl", "-qw", "net.ipv4.conf."+dev+".arp_ignore=1", "net.ipv4.conf."+dev+".arp_announce=2")
		}
		run(t, h, "ip", "addr", "add", labVIP+"/32", "dev", "lo")
		return h
	}
	natHost := func(name, addr string) *netlab.Host {
		h := l.nl.AddHost(name)
		l.realsSeg.AddLink(h, "eth1", addr+"/24")
		run(t, h, "ip", "route", "add", "default", "via", labGateway)
		return h
	}
	for i := range 3 {
		name := fmt.Sprintf("rs%d", i+1)
		l.reals = append(l.reals, serve(t, drHost(name, fmt.Sprintf("192.0.2.%d", 21+i)), name, ":80"))
	}
	for i := range 3 {
		name := fmt.Sprintf("nrs%d", i+1)
		l.reals = append(l.reals, serve(t, natHost(name, fmt.Sprintf("198.51.100.%d", 11+i)), name, ":8080"))
	}
	l.sorry = append(l.sorry, serve(t, drHost("sorry", "192.0.2.30"), "sorry", ":80"))
	l.sorry = append(l.sorry, serve(t, natHost("nsorry", "198.51.100.30"), "nsorry", ":8080"))
	for i := range 2 {
		host := 11 + i
		h := l.nl.AddHost(fmt.Sprintf("lb%d", i+1), fmt.Sprintf("192.0.2.%d/24", host))
		l.syncSeg.AddLink(h, "eth1", fmt.Sprintf("203.0.113.%d/24", host))
		l.realsSeg.AddLink(h, "eth2", fmt.Sprintf("198.51.100.%d/24", host-9))
		run(t, h, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		// Sync an active connection every 10 of its packets (the kernel's
		// default is 50), for both implementations alike, so that a
		// director that returns learns the connections that began while it
		// was away within its preempt delay.
		if err := h.Do(func() error { return os.WriteFile("/proc/sys/net/ipv4/vs/sync_threshold", []byte("3 10"), 0o644) }); err != nil {
			t.Fatal(err)
		}
		l.lbh[i] = h
	}
	return l
}

// run runs argv in h and fails the test on error.
func run(t testing.TB, h *netlab.Host, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.Run(ctx, argv...)
	if err != nil {
		t.Fatalf("%s: %q: %v\n%s", h.Label, argv, err, out)
	}
	return string(out)
}

// realServer is an HTTP server in a host that can die and return.
type realServer struct {
	t    *testing.T
	h    *netlab.Host
	name string
	addr string
	mu   sync.Mutex
	srv  *http.Server
}

func serve(t *testing.T, h *netlab.Host, name, addr string) *realServer {
	rs := &realServer{t: t, h: h, name: name, addr: addr}
	rs.start()
	t.Cleanup(rs.die)
	return rs
}

func (rs *realServer) start() {
	rs.t.Helper()
	var ln net.Listener
	if err := rs.h.Do(func() (err error) { ln, err = net.Listen("tcp4", rs.addr); return err }); err != nil {
		rs.t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) { fmt.Fprintf(w, "%s\n", rs.name) })
	srv := &http.Server{Handler: mux}
	rs.mu.Lock()
	rs.srv = srv
	rs.mu.Unlock()
	go srv.Serve(ln)
}

// die closes the listener and every connection, as a crashed server's
// kernel would.
func (rs *realServer) die() {
	rs.mu.Lock()
	defer rs.mu.Unlock()
	if rs.srv != nil {
		rs.srv.Close()
		rs.srv = nil
	}
}

// vipHolders lists, for each VIP, the directors that have it bound.
func (l *lab) vipHolders() map[string][]string {
	held := map[string][]string{labVIP: nil, labGateway: nil}
	for _, h := range l.lbh {
		out := run(l.t, h, "ip", "-o", "-4", "addr", "show")
		for vip := range held {
			if strings.Contains(out, " "+vip+"/32 ") {
				held[vip] = append(held[vip], h.Label)
			}
		}
	}
	return held
}

// leaked counts the VIPs not held by exactly one director.
func (l *lab) leaked() (int, string) {
	n := 0
	var s []string
	for vip, hs := range l.vipHolders() {
		if len(hs) != 1 {
			n++
			s = append(s, fmt.Sprintf("%s on %v", vip, hs))
		}
	}
	return n, strings.Join(s, ", ")
}

// established counts ESTABLISHED entries in a director's IPVS table.
func (l *lab) established(i int) int {
	var out string
	if err := l.lbh[i].Do(func() error {
		// /proc/net is the netns of the main thread; thread-self is ours.
		b, err := os.ReadFile("/proc/thread-self/net/ip_vs_conn")
		out = string(b)
		return err
	}); err != nil {
		l.t.Fatal(err)
	}
	return strings.Count(out, "ESTABLISHED")
}

// A director is one implementation running on lb1 or lb2.
type director struct {
	t    *testing.T
	l    *lab
	i    int
	kind string // "directord" or "keepalived"
	h    *netlab.Host
	dir  string
	cfg  string
	runs []*netlab.Proc // every run, the current one last
	// preempt, preemptDelay and metrics (node.metrics_address) are
	// written into the next configuration.
	preempt      bool
	preemptDelay time.Duration
	metrics      string
}

var (
	kaState = regexp.MustCompile(`\(VI_1\) Entering (MASTER|BACKUP|FAULT) STATE`)
	ddState = regexp.MustCompile(`msg="VRRP transition".* to=([A-Z]+)`)
)

func (l *lab) director(kind string, i int) *director {
	d := &director{t: l.t, l: l, i: i, kind: kind, h: l.lbh[i], dir: l.t.TempDir(), preempt: true, preemptDelay: labPreemptDelay}
	if l.metrics {
		d.metrics = "127.0.0.1:9580"
	}
	if kind == "directord" {
		d.cfg = filepath.Join(d.dir, "directord.yaml")
	} else {
		d.cfg = filepath.Join(d.dir, "keepalived.conf")
	}
	l.t.Cleanup(func() { d.stop(syscall.SIGTERM) })
	return d
}

func (d *director) name() string { return d.h.Label }

func (d *director) priority() int { return 150 - 50*d.i }

func (d *director) socket() string { return filepath.Join(d.dir, "ctl.sock") }

func (d *director) writeConfig() {
	var cfg string
	if d.kind == "directord" {
		cfg = d.directordConfig()
	} else {
		cfg = d.keepalivedConfig()
	}
	if err := os.WriteFile(d.cfg, []byte(cfg), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

func (d *director) directordConfig() string {
	preempt := fmt.Sprintf("preempt: true\n      preempt_delay: %v", d.preemptDelay)
	if !d.preempt {
		preempt = "preempt: false"
	}
	metrics := ""
	if d.metrics != "" {
		metrics = ", metrics_address: " + d.metrics
	}
	check := fmt.Sprintf("{type: http, path: /healthz, expect_status: [200], interval: %v, timeout: %v, rise: 1, fall: 2}", labCheck, labCheck)
	return fmt.Sprintf(`node: {name: %[1]s, state_dir: %[2]s/state, control_socket: %[3]s, log: {level: info, format: text}%[10]s}
vrrp:
  instances:
    - name: VI_1
      interface: eth0
      vrid: 51
      priority: %[4]d
      advert_interval: %[5]v
      %[6]s
      virtual_addresses:
        - %[7]s
        - {address: %[8]s/32, interface: eth2}
ipvs:
  virtual_services:
    - name: dr
      address: %[7]s:80
      scheduler: rr
      forwarding: dr
      check: %[9]s
      sorry_server: {address: 192.0.2.30}
      real_servers: [{address: 192.0.2.21}, {address: 192.0.2.22}, {address: 192.0.2.23}]
    - name: nat
      address: %[7]s:8080
      scheduler: rr
      forwarding: nat
      check: %[9]s
      sorry_server: {address: "198.51.100.30:8080"}
      real_servers: [{address: "198.51.100.11:8080"}, {address: "198.51.100.12:8080"}, {address: "198.51.100.13:8080"}]
sync: {interface: eth1, sync_id: 51, follow: VI_1, resync_on_backup: false}
`, d.name(), d.dir, d.socket(), d.priority(), labAdvert, preempt, labVIP, labGateway, check, metrics)
}

func (d *director) keepalivedConfig() string {
	preempt := fmt.Sprintf("preempt_delay %g", d.preemptDelay.Seconds())
	if !d.preempt {
		preempt = "nopreempt"
	}
	var vs strings.Builder
	for _, s := range []struct {
		port, kind, sorry string
		reals             []string
	}{
		{"80", "DR", "192.0.2.30 80", []string{"192.0.2.21 80", "192.0.2.22 80", "192.0.2.23 80"}},
		{"8080", "NAT", "198.51.100.30 8080", []string{"198.51.100.11 8080", "198.51.100.12 8080", "198.51.100.13 8080"}},
	} {
		fmt.Fprintf(&vs, "virtual_server %s %s {\n    delay_loop 1\n    lb_algo rr\n    lb_kind %s\n    protocol TCP\n    sorry_server %s\n", labVIP, s.port, s.kind, s.sorry)
		for _, r := range s.reals {
			fmt.Fprintf(&vs, "    real_server %s {\n        weight 1\n        HTTP_GET {\n            url {\n                path /healthz\n                status_code 200\n            }\n            connect_timeout 1\n            retry 1\n            delay_before_retry 0.5\n        }\n    }\n", r)
		}
		vs.WriteString("}\n")
	}
	return fmt.Sprintf(`global_defs {
    router_id %s
    vrrp_version 3
    lvs_sync_daemon eth1 VI_1 id 51
}

vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority %d
    advert_int %g
    %s
    virtual_ipaddress {
        %s/32 dev eth0
        %s/32 dev eth2
    }
}

%s`, d.name(), d.priority(), labAdvert.Seconds(), preempt, labVIP, labGateway, vs.String())
}

// start starts a new run with the current configuration and waits until
// it has taken the configuration.
func (d *director) start() {
	d.t.Helper()
	d.writeConfig()
	var p *netlab.Proc
	if d.kind == "directord" {
		p = d.h.Start(filepath.Join(binDir(), "directord"), "-c", d.cfg)
	} else {
		p = d.h.Start("keepalived", "-n", "-l", "-D", "-f", d.cfg,
			"-p", filepath.Join(d.dir, "keepalived.pid"), "-r", filepath.Join(d.dir, "vrrp.pid"),
			"-c", filepath.Join(d.dir, "checkers.pid"))
	}
	d.runs = append(d.runs, p)
	d.waitFor(func() bool { return d.state() != "" }, 20*time.Second, "its first VRRP state")
}

func (d *director) proc() *netlab.Proc { return d.runs[len(d.runs)-1] }

func (d *director) running() bool {
	if len(d.runs) == 0 {
		return false
	}
	select {
	case <-d.proc().Done():
		return false
	default:
		return true
	}
}

// stop signals the current run (SIGKILL: its whole process group, a
// crash) and waits for it to end.
func (d *director) stop(sig syscall.Signal) {
	if !d.running() {
		return
	}
	p := d.proc()
	if sig == syscall.SIGKILL {
		p.Kill()
	} else {
		p.Signal(sig)
	}
	if err := p.Wait(15 * time.Second); err != nil && d.running() {
		p.Kill()
		p.Wait(5 * time.Second)
	}
}

// state is the VRRP state of the current run ("" before its first).
func (d *director) state() string {
	if !d.running() {
		return "STOPPED"
	}
	return lastState(d.kind, string(d.proc().Output()))
}

func lastState(kind, out string) string {
	re := ddState
	if kind == "keepalived" {
		re = kaState
	}
	m := re.FindAllStringSubmatch(out, -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}

// masters counts the times any run became MASTER.
func (d *director) masters() int {
	n := 0
	for _, p := range d.runs {
		re := ddState
		if d.kind == "keepalived" {
			re = kaState
		}
		for _, m := range re.FindAllStringSubmatch(string(p.Output()), -1) {
			if m[1] == "MASTER" {
				n++
			}
		}
	}
	return n
}

// reload makes the current run read its configuration again:
// directorctl reload, or keepalived's SIGHUP.
func (d *director) reload() error {
	if d.kind == "directord" {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := d.h.Run(ctx, filepath.Join(binDir(), "directorctl"), "-s", d.socket(), "reload")
		if err != nil {
			return fmt.Errorf("directorctl reload: %v: %s", err, out)
		}
		return nil
	}
	return d.proc().Signal(syscall.SIGHUP)
}

// ctl runs directorctl against this director.
func (d *director) ctl(args ...string) string {
	d.t.Helper()
	return run(d.t, d.h, append([]string{filepath.Join(binDir(), "directorctl"), "-s", d.socket()}, args...)...)
}

func (d *director) waitFor(cond func() bool, timeout time.Duration, what string) {
	d.t.Helper()
	if !waitUntil(cond, timeout) {
		d.t.Fatalf("%s (%s): no %s within %v; log:\n%s", d.name(), d.kind, what, timeout, d.tail())
	}
}

func (d *director) waitState(st string, timeout time.Duration) {
	d.t.Helper()
	d.waitFor(func() bool { return d.state() == st }, timeout, st+" state")
}

// tail is the end of the current run's log.
func (d *director) tail() string {
	if len(d.runs) == 0 {
		return "(never started)"
	}
	out := string(d.proc().Output())
	if len(out) > 6000 {
		out = "...\n" + out[len(out)-6000:]
	}
	return out
}

func waitUntil(cond func() bool, timeout time.Duration) bool {
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}
