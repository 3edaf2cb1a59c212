package vrrp

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
)

// Interop with keepalived 2.2 (TESTING.md, "Real peers to test against"):
// directord and a real keepalived elect each other on one LAN, in both
// directions, for VRRPv2, VRRPv2 with PASS authentication and VRRPv3 with a
// sub-second interval, and neither side may complain about the other's
// adverts.

// kaVIP is the virtual address both implementations serve in these tests
// (instanceYAML's, written the way `ip -o addr` shows it).
const kaVIP = "192.0.2.50/32"

// kaConf is the part of a keepalived.conf that a test varies.
type kaConf struct {
	version  int    // vrrp_version: 2 or 3
	priority int    // priority
	advert   string // advert_int in keepalived's syntax: "1", "0.1"
	password string // auth_pass for auth_type PASS; "" = no authentication
	// unicastPeer, if set, makes adverts unicast to it (unicast_peer),
	// and oldChecksum sums them as keepalived 1.3.6 and older did
	// (old_unicast_checksum: over 224.0.0.18).
	unicastPeer string
	oldChecksum bool
}

// kaConfig renders a VRRP-only keepalived.conf: one instance VI_1 on eth0,
// VRID 51, the VIP of instanceYAML. Every instance starts as BACKUP, as
// directord does, so the election alone decides. The GARP settings match
// instanceYAML's (two, no second burst), so both sides announce alike. No
// scripts, so no script_user or enable_script_security.
func kaConfig(c kaConf) string {
	var auth string
	if c.password != "" {
		auth = fmt.Sprintf("    authentication {\n        auth_type PASS\n        auth_pass %s\n    }\n", c.password)
	}
	if c.unicastPeer != "" {
		auth += fmt.Sprintf("    unicast_peer {\n        %s\n    }\n", c.unicastPeer)
	}
	if c.oldChecksum {
		auth += "    old_unicast_checksum\n"
	}
	return fmt.Sprintf(`global_defs {
    router_id ka
    vrrp_version %d
    vrrp_garp_master_delay 0
    vrrp_garp_master_repeat 2
}

vrrp_instance VI_1 {
    state BACKUP
    interface eth0
    virtual_router_id 51
    priority %d
    advert_int %s
%s    virtual_ipaddress {
        %s dev eth0
    }
}
`, c.version, c.priority, c.advert, auth, kaVIP)
}

// kaNode is a keepalived running VRRP only in a host namespace, observed
// through its console log and the addresses it binds.
type kaNode struct {
	t    *testing.T
	h    *netlab.Host
	dir  string
	conf string
	runs []*netlab.Proc // every run, the current one last
}

// kaRequire skips (or, in CI, fails) a test when keepalived is missing:
// these tests are about a real peer and prove nothing without one.
func kaRequire(t testing.TB) {
	t.Helper()
	if _, err := exec.LookPath("keepalived"); err != nil {
		if os.Getenv("CI") == "true" {
			t.Fatalf("keepalived not installed (scripts/install-deps.sh installs it): %v", err)
		}
		t.Skipf("skipping: keepalived not installed: %v", err)
	}
}

// newKeepalived writes keepalived.conf for h; start runs it.
func newKeepalived(t *testing.T, h *netlab.Host, c kaConf) *kaNode {
	t.Helper()
	kaRequire(t)
	k := &kaNode{t: t, h: h, dir: t.TempDir()}
	k.conf = filepath.Join(k.dir, "keepalived.conf")
	if err := os.WriteFile(k.conf, []byte(kaConfig(c)), 0o644); err != nil {
		t.Fatal(err)
	}
	return k
}

// start runs keepalived in the foreground (-n), VRRP only (-P), logging in
// detail (-D) to the console (-l) and not to syslog (-G). Its pid files (-p,
// -r) live in the test's directory, not /run: keepalived refuses to start
// when its pid file names a running process, and every namespace shares the
// host's /run. The config id (-i) would default to the host name, which all
// namespaces share too.
func (k *kaNode) start() {
	k.t.Helper()
	// A SIGKILLed run leaves its pid files; keepalived would read them and
	// could take a recycled pid for a running instance.
	for _, f := range []string{"keepalived.pid", "vrrp.pid"} {
		os.Remove(filepath.Join(k.dir, f))
	}
	p := k.h.Start(kaArgv(k.h.Label, k.conf, k.dir)...)
	k.runs = append(k.runs, p)
	// The instance's first state line shows the config was taken.
	k.waitLog(5*time.Second, kaStateLine)
}

// kaArgv is the keepalived command line used by every test and benchmark.
func kaArgv(id, conf, dir string) []string {
	return []string{"keepalived", "-P", "-n", "-l", "-D", "-G",
		"-i", id, "-f", conf,
		"-p", filepath.Join(dir, "keepalived.pid"),
		"-r", filepath.Join(dir, "vrrp.pid")}
}

func (k *kaNode) proc() *netlab.Proc { return k.runs[len(k.runs)-1] }

// output is the current run's console log.
func (k *kaNode) output() string { return string(k.proc().Output()) }

// allOutput is every run's console log, for the error scan.
func (k *kaNode) allOutput() string {
	var b strings.Builder
	for _, p := range k.runs {
		b.Write(p.Output())
	}
	return b.String()
}

// kaStateLine matches keepalived's state changes of VI_1: "(VI_1) Entering
// BACKUP STATE (init)", "(VI_1) Entering MASTER STATE".
var kaStateLine = regexp.MustCompile(`\(VI_1\) Entering (MASTER|BACKUP|FAULT) STATE`)

// stateOf is the current run's last logged state of VI_1 ("" before any,
// "STOPPED" once the run has exited).
func (k *kaNode) stateOf() string {
	select {
	case <-k.proc().Done():
		return "STOPPED"
	default:
	}
	m := kaStateLine.FindAllStringSubmatch(k.output(), -1)
	if len(m) == 0 {
		return ""
	}
	return m[len(m)-1][1]
}

func (k *kaNode) waitLog(d time.Duration, re *regexp.Regexp) {
	k.t.Helper()
	deadline := time.Now().Add(d)
	for !re.MatchString(k.output()) {
		select {
		case <-k.proc().Done():
			k.t.Fatalf("%s: keepalived exited (%v) before logging %q; output:\n%s", k.h.Label, k.proc().Wait(0), re, k.output())
		default:
		}
		if time.Now().After(deadline) {
			k.t.Fatalf("%s: keepalived logged no %q within %v; output:\n%s", k.h.Label, re, d, k.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitState waits until VI_1's last logged state is state.
func (k *kaNode) waitState(state string, d time.Duration) {
	k.t.Helper()
	deadline := time.Now().Add(d)
	for k.stateOf() != state {
		if time.Now().After(deadline) {
			k.t.Fatalf("%s: keepalived VI_1 not %s within %v (last: %q); output:\n%s", k.h.Label, state, d, k.stateOf(), k.output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// stop sends SIGTERM to keepalived's parent, which stops its VRRP child:
// the child sends priority 0 and removes the VIP.
func (k *kaNode) stop() {
	k.t.Helper()
	if err := k.proc().Signal(syscall.SIGTERM); err != nil {
		k.t.Fatal(err)
	}
	if err := k.proc().Wait(10 * time.Second); err != nil {
		k.t.Fatalf("%s: keepalived exit after SIGTERM: %v\n%s", k.h.Label, err, k.output())
	}
}

// kill is a crash: SIGKILL to keepalived's process group, its VRRP child
// included, so nothing sends priority 0 or removes the VIP.
func (k *kaNode) kill() {
	k.t.Helper()
	if err := k.proc().Kill(); err != nil {
		k.t.Fatal(err)
	}
	if err := k.proc().Wait(5 * time.Second); err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			k.t.Fatalf("%s: keepalived after SIGKILL: %v", k.h.Label, err)
		}
	}
}

// kaRxErrors are keepalived 2.2's complaints about adverts it received
// (vrrp/vrrp.c, vrrp_check_packet and the receive path; the strings are in
// /usr/sbin/keepalived): each one means it discarded or distrusted a peer's
// packet, so none may appear while it talks to directord.
var kaRxErrors = regexp.MustCompile(strings.Join([]string{
	`Invalid VRRPv[23] checksum`,
	`invalid TTL/HL`,
	`TTL/HL \d+ not in range`,
	`wrong version`,
	`Invalid packet type`,
	`vrrp packet too (short|long)`,
	`VRRP packet (with AH )?too short`,
	`ip_tot_len mismatch`,
	`received a \d+ auth, expecting`,
	`received an invalid passwd`,
	`Received AH header but auth type not AH`,
	`No AH header but auth type is AH`,
	`advertisement interval mismatch`,
	`advertisement interval updated from`,
	`received an unexpected ip number count`,
	`expected \d+ VIPs but received`,
	`ip address associated with VRID \d+ not present`,
	`Unknown VRID`,
	`discarding \w+icast packet`,
	`Expected \w+icast packet but received`,
	`equal priority advert received from remote host with our IP address`,
}, "|"))

// rxErrors returns keepalived's receive-error lines over all its runs.
func (k *kaNode) rxErrors() []string {
	var out []string
	for _, l := range strings.Split(k.allOutput(), "\n") {
		if kaRxErrors.MatchString(l) {
			out = append(out, l)
		}
	}
	return out
}

// kaHolds reports whether h has the VIP bound, by node.hasAddr's check.
func kaHolds(t *testing.T, h *netlab.Host) bool {
	t.Helper()
	return (&node{t: t, h: h, name: h.Label}).hasAddr(kaVIP)
}

// kaWaitVIP waits until h holds the VIP (want) or not: the state is logged
// just before the address moves.
func kaWaitVIP(t *testing.T, h *netlab.Host, want bool, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	for kaHolds(t, h) != want {
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %s: %v, want %v after %v", h.Label, kaVIP, !want, want, d)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// kaInterop is one protocol flavour both sides are configured for.
type kaInterop struct {
	name     string
	ka       kaConf // priority is set per scenario
	interval string // directord advert_interval
	extra    string // directord instance keys (instanceYAML's extra)
	// elect bounds an election from startup: Master_Down_Interval
	// (3 * interval + Skew_Time) plus slack for a loaded CI machine.
	elect time.Duration
	// settle lets a few adverts pass after a change, so that a peer that
	// rejects them has had the chance to say so.
	settle time.Duration
}

var kaFlavours = []kaInterop{
	{
		name:     "v2",
		ka:       kaConf{version: 2, advert: "1"},
		interval: "1s",
		extra:    "      version: 2\n",
		elect:    6 * time.Second,
		settle:   1500 * time.Millisecond,
	},
	{
		name:     "v2_pass",
		ka:       kaConf{version: 2, advert: "1", password: "s3cret"},
		interval: "1s",
		extra:    "      version: 2\n      authentication: {type: pass, password: s3cret}\n",
		elect:    6 * time.Second,
		settle:   1500 * time.Millisecond,
	},
	{
		name:     "v3_100ms",
		ka:       kaConf{version: 3, advert: "0.1"},
		interval: "100ms",
		extra:    "      version: 3\n",
		elect:    3 * time.Second,
		settle:   500 * time.Millisecond,
	},
	{
		name:     "v3_unicast",
		ka:       kaConf{version: 3, advert: "0.1", unicastPeer: "192.0.2.11"},
		interval: "100ms",
		extra:    "      version: 3\n      unicast_peers: [192.0.2.12]\n",
		elect:    3 * time.Second,
		settle:   500 * time.Millisecond,
	},
	{
		// A keepalived of RHEL 7's vintage: unicast VRRPv3 summed over
		// 224.0.0.18. directord notices it on the first advert and sums
		// its own the same way (keepalived configured so accepts no other).
		name:     "v3_unicast_old_checksum",
		ka:       kaConf{version: 3, advert: "0.1", unicastPeer: "192.0.2.11", oldChecksum: true},
		interval: "100ms",
		extra:    "      version: 3\n      unicast_peers: [192.0.2.12]\n",
		elect:    3 * time.Second,
		settle:   500 * time.Millisecond,
	},
}

// kaPair is one directord (lb1, 192.0.2.11) and one keepalived (ka1,
// 192.0.2.12) on a LAN.
type kaPair struct {
	f  kaInterop
	dd *node
	ka *kaNode
	// ddRuns are directord's earlier runs: node keeps only the current
	// one, and the drop check covers them all.
	ddRuns []*netlab.Proc
}

func newKaPair(t *testing.T, f kaInterop, ddPrio, kaPrio int) *kaPair {
	t.Helper()
	lab := netlab.New(t)
	ddHost := lab.AddHost("lb1", "192.0.2.11/24")
	kaHost := lab.AddHost("ka1", "192.0.2.12/24")
	c := f.ka
	c.priority = kaPrio
	p := &kaPair{
		f:  f,
		dd: newNode(t, ddHost, "vrrp:\n  instances:\n"+instanceYAML("VI_1", 51, ddPrio, f.interval, f.extra)),
		ka: newKeepalived(t, kaHost, c),
	}
	// However the test ends, report what keepalived thought of directord.
	t.Cleanup(func() {
		if t.Failed() && len(p.ka.runs) > 0 {
			t.Logf("keepalived on %s, all runs:\n%s", kaHost.Label, p.ka.allOutput())
		}
	})
	return p
}

// startDD starts directord (again), keeping the previous run's log.
func (p *kaPair) startDD() {
	if p.dd.proc != nil {
		p.ddRuns = append(p.ddRuns, p.dd.proc)
	}
	p.dd.start()
}

// steady waits until directord and keepalived are in the given states and
// the VIP is where the master is. It waits rather than samples: a stall of
// the whole machine longer than Master_Down_Interval (seen on a loaded
// 2-CPU VM: 450 ms, against 361 ms at 100 ms adverts) can make a backup
// flap to MASTER, and the higher priority master's answer heals that
// within an advert interval. A peer that really ignores the other's
// adverts stays wrong and fails here.
func (p *kaPair) steady(t *testing.T, ddState, kaState string) {
	t.Helper()
	p.dd.waitState("VI_1", ddState, p.f.elect)
	p.ka.waitState(kaState, p.f.elect)
	kaWaitVIP(t, p.dd.h, ddState == "MASTER", time.Second)
	kaWaitVIP(t, p.ka.h, kaState == "MASTER", time.Second)
}

// checkClean fails the test if either side rejected the other's adverts:
// directord's debug log names every dropped advert with its source, and
// keepalived logs a receive error.
func (p *kaPair) checkClean(t *testing.T) {
	t.Helper()
	kaAddr := p.ka.h.IPv4().String()
	var oldSum []time.Time
	for _, run := range append(p.ddRuns, p.dd.proc) {
		for _, l := range (&node{t: t, proc: run}).lines() {
			if l.Msg == "VRRP advert dropped" && l.Src == kaAddr {
				t.Errorf("directord dropped keepalived's advert: reason %s", l.Reason)
			}
			if strings.HasPrefix(l.Msg, "VRRP peer sums its unicast adverts over 224.0.0.18") {
				oldSum = append(oldSum, l.Time)
			}
		}
	}
	// Every run that heard keepalived noticed its old checksum (one line
	// per run), or none did.
	if want := map[bool]int{true: len(p.ddRuns) + 1}[p.f.ka.oldChecksum]; len(oldSum) != want {
		t.Errorf("directord logged keepalived's old unicast checksum %d times over %d runs, want %d", len(oldSum), len(p.ddRuns)+1, want)
	}
	for _, l := range p.ka.rxErrors() {
		// A directord that became master before it heard the old peer
		// sent RFC checksums until it did (keepalived logs whole seconds).
		if at, err := time.ParseInLocation("Mon Jan _2 15:04:05 2006", strings.SplitN(strings.TrimSpace(l), ": ", 2)[0], time.Local); err == nil &&
			p.f.ka.oldChecksum && strings.Contains(l, "Invalid VRRPv3 checksum") &&
			slices.ContainsFunc(oldSum, func(d time.Time) bool { return !at.After(d) && at.After(d.Add(-2*time.Second)) }) {
			t.Logf("before directord heard keepalived's old checksum: %s", l)
			continue
		}
		t.Errorf("keepalived rejected directord's advert: %s", l)
	}
}

// TestNetnsKeepalivedInterop runs, for each flavour, the two drills of
// TESTING.md against a real keepalived:
//
//   - directord_master: directord (150) is elected over keepalived (100);
//     when directord stops it sends priority 0 and keepalived takes over;
//     when directord returns it preempts and keepalived goes back to BACKUP.
//   - keepalived_master: the same with the roles swapped.
//
// Each side must show that it understood the other: a backup that stays
// BACKUP past its Master_Down_Interval accepted the master's adverts, a
// priority 0 advert is recognised as such, a returning higher priority is
// obeyed, and neither logs a rejected advert.
func TestNetnsKeepalivedInterop(t *testing.T) {
	netlab.Require(t)
	kaRequire(t)
	t.Parallel()
	for _, f := range kaFlavours {
		t.Run(f.name, func(t *testing.T) {
			t.Parallel()
			t.Run("directord_master", func(t *testing.T) {
				t.Parallel()
				kaDirectordMaster(t, f)
			})
			t.Run("keepalived_master", func(t *testing.T) {
				t.Parallel()
				kaKeepalivedMaster(t, f)
			})
		})
	}
}

func kaDirectordMaster(t *testing.T, f kaInterop) {
	p := newKaPair(t, f, 150, 100)
	p.ka.start()
	p.startDD()
	p.steady(t, "MASTER", "BACKUP")
	// Past keepalived's Master_Down_Interval: it accepts directord's adverts.
	time.Sleep(f.settle)
	p.steady(t, "MASTER", "BACKUP")

	// RFC 5798 6.4.3 / RFC 3768 6.4.3: directord leaves with priority 0,
	// and keepalived takes over after Skew_Time.
	p.dd.stop()
	p.ka.waitLog(f.elect, regexp.MustCompile(`\(VI_1\) Backup received priority 0 advertisement`))
	p.ka.waitState("MASTER", f.elect)
	kaWaitVIP(t, p.ka.h, true, time.Second)
	if p.dd.hasAddr(kaVIP) {
		t.Error("directord kept the VIP after SIGTERM")
	}
	time.Sleep(f.settle)

	// Handback: directord returns as BACKUP, ignores the lower priority
	// (preempt), becomes MASTER after Master_Down_Interval, and keepalived
	// steps down on its first advert.
	p.startDD()
	p.dd.waitState("VI_1", "MASTER", f.elect)
	p.ka.waitLog(f.elect, regexp.MustCompile(`\(VI_1\) Master received advert from `+regexp.QuoteMeta(p.dd.h.IPv4().String())+` with higher priority 150, ours 100`))
	p.steady(t, "MASTER", "BACKUP")
	time.Sleep(f.settle)
	p.steady(t, "MASTER", "BACKUP")
	p.checkClean(t)
}

func kaKeepalivedMaster(t *testing.T, f kaInterop) {
	p := newKaPair(t, f, 100, 150)
	p.ka.start()
	p.startDD()
	p.steady(t, "BACKUP", "MASTER")
	// Past directord's Master_Down_Interval: it accepts keepalived's adverts.
	time.Sleep(f.settle)
	p.steady(t, "BACKUP", "MASTER")

	// keepalived leaves with priority 0, and directord takes over after
	// Skew_Time instead of Master_Down_Interval, and says so.
	p.ka.stop()
	took := p.dd.waitState("VI_1", "MASTER", f.elect)
	if want := fmt.Sprintf("master %s left (priority 0)", p.ka.h.IPv4()); !strings.HasPrefix(took.Reason, want) {
		t.Errorf("directord took over because %q, want %q...: keepalived's priority 0 advert was not seen", took.Reason, want)
	}
	kaWaitVIP(t, p.dd.h, true, time.Second)
	if kaHolds(t, p.ka.h) {
		t.Error("keepalived kept the VIP after SIGTERM")
	}
	time.Sleep(f.settle)

	// keepalived returns and preempts; directord steps down on its advert.
	p.ka.start()
	p.ka.waitState("MASTER", f.elect)
	down := p.dd.waitState("VI_1", "BACKUP", f.elect)
	if want := fmt.Sprintf("advert from %s with priority 150 (ours 100)", p.ka.h.IPv4()); down.Reason != want {
		t.Errorf("directord stepped down because %q, want %q", down.Reason, want)
	}
	p.steady(t, "BACKUP", "MASTER")
	time.Sleep(f.settle)
	p.steady(t, "BACKUP", "MASTER")
	p.checkClean(t)
}

// A wrong PASS password must be noticed by both sides (RFC 3768 7.1: the
// advert is discarded), so each sees no master and takes the VIP: two
// masters. This is the check that the interop tests above can fail.
func TestNetnsKeepalivedPassMismatchIsDetected(t *testing.T) {
	netlab.Require(t)
	kaRequire(t)
	t.Parallel()
	f := kaFlavours[1] // v2_pass
	f.extra = "      version: 2\n      authentication: {type: pass, password: wrong}\n"
	p := newKaPair(t, f, 150, 100)
	p.ka.start()
	p.startDD()
	p.dd.waitState("VI_1", "MASTER", f.elect)
	p.ka.waitState("MASTER", f.elect)
	kaWaitVIP(t, p.dd.h, true, time.Second)
	kaWaitVIP(t, p.ka.h, true, time.Second)
	kaAddr := p.ka.h.IPv4().String()
	p.dd.waitLog(3*time.Second, func(l logLine) bool {
		return l.Msg == "VRRP advert dropped" && l.Reason == "auth_mismatch" && l.Src == kaAddr
	})
	p.ka.waitLog(3*time.Second, regexp.MustCompile(`\(VI_1\) received an invalid passwd`))
	if len(p.ka.rxErrors()) == 0 {
		t.Error("the receive-error scan found nothing in keepalived's log")
	}
	if s := p.dd.stateOf("VI_1"); s != "MASTER" {
		t.Errorf("directord is %s, want MASTER (it must not accept the adverts)", s)
	}
	if s := p.ka.stateOf(); s != "MASTER" {
		t.Errorf("keepalived is %s, want MASTER", s)
	}
}
