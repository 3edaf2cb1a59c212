//go:build vmguest

package daemon

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
	"github.com/vishvananda/netlink"
)

type director struct {
	t     *testing.T
	h     *netlab.Host
	cfg   string
	state string
	proc  *netlab.Proc
}

func newDirector(t *testing.T) *director {
	return newDirectorOn(t, netlab.New(t), "lb", "192.0.2.11/24")
}

// newDirectorOn adds a director host to lab, with a "reals" dummy
// interface holding the real servers' network.
func newDirectorOn(t *testing.T, lab *netlab.Lab, name, hostAddr string) *director {
	h := lab.AddHost(name, hostAddr)
	// The real servers' network, so the kernel accepts them.
	la := netlink.NewLinkAttrs()
	la.Name = "reals"
	dummy := &netlink.Dummy{LinkAttrs: la}
	if err := h.Netlink().LinkAdd(dummy); err != nil {
		t.Fatal(err)
	}
	addr, _ := netlink.ParseAddr("198.51.100.1/24")
	if err := h.Netlink().AddrAdd(dummy, addr); err != nil {
		t.Fatal(err)
	}
	if err := h.Netlink().LinkSetUp(dummy); err != nil {
		t.Fatal(err)
	}
	return directorOn(t, h)
}

// directorOn makes h a director host.
func directorOn(t *testing.T, h *netlab.Host) *director {
	dir := t.TempDir()
	d := &director{t: t, h: h, cfg: filepath.Join(dir, "directord.yaml"), state: filepath.Join(dir, "state")}
	// Registered after t.TempDir: stops directord before its state dir goes.
	t.Cleanup(func() {
		if d.proc != nil {
			_ = d.proc.Signal(syscall.SIGTERM)
			_ = d.proc.Wait(10 * time.Second)
		}
	})
	return d
}

func (d *director) write(services string) { d.writeWith(services, "") }

// writeWith writes the config with the ipvs services and other top-level
// sections (vrrp).
func (d *director) writeWith(services, more string) {
	d.t.Helper()
	cfg := fmt.Sprintf("node: {name: %s, state_dir: %s, control_socket: %s/ctl.sock, log: {level: info, format: text}}\n%sipvs:\n  resync_interval: 1s\n  virtual_services:\n%s", d.h.Label, d.state, d.state, more, services)
	if err := os.WriteFile(d.cfg, []byte(cfg), 0o644); err != nil {
		d.t.Fatal(err)
	}
}

func (d *director) start(args ...string) {
	d.t.Helper()
	d.proc = d.h.Start(append([]string{"/bin/directord", "-c", d.cfg}, args...)...)
	d.waitLog("directord running", 1)
}

func (d *director) count(substr string) int { return strings.Count(string(d.proc.Output()), substr) }

func (d *director) waitLog(substr string, n int) {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for d.count(substr) < n {
		if time.Now().After(deadline) {
			d.t.Fatalf("no %d× %q in directord's log:\n%s", n, substr, d.proc.Output())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func (d *director) ipvsadm() string {
	d.t.Helper()
	out, err := d.h.Run(context.Background(), "ipvsadm", "-Ln")
	if err != nil {
		d.t.Fatal(err)
	}
	return string(out)
}

func (d *director) stop() {
	d.t.Helper()
	if err := d.proc.Signal(syscall.SIGTERM); err != nil {
		d.t.Fatal(err)
	}
	if err := d.proc.Wait(10 * time.Second); err != nil {
		d.t.Fatalf("directord exit: %v\n%s", err, d.proc.Output())
	}
}

const web = `    - name: web
      address: 192.0.2.50:80
      scheduler: wrr
      forwarding: nat
      check: {type: none}
      real_servers:
        - {address: "198.51.100.11:80", weight: 3}
        - {address: "198.51.100.12:80"}
`

// directord installs the configured table; a reload that adds one real
// server changes exactly one destination and leaves a hand-made service
// alone; ipvsadm -C is repaired at the next resync; the table survives a
// stop, a restart removes what is no longer configured, and
// --flush-on-stop removes what directord installed.
func TestGuestDirectordOwnsTheIPVSTable(t *testing.T) {
	d := newDirector(t)
	d.write(web)
	d.start()
	out := d.ipvsadm()
	for _, want := range []string{"TCP  192.0.2.50:80 wrr", "198.51.100.11:80             Masq    3", "198.51.100.12:80             Masq    1"} {
		if !strings.Contains(out, want) {
			t.Fatalf("ipvsadm -Ln lacks %q:\n%s", want, out)
		}
	}
	if _, err := d.h.Run(context.Background(), "ipvsadm", "-A", "-t", "203.0.113.9:22", "-s", "rr"); err != nil {
		t.Fatal(err)
	}

	applied := d.count("IPVS change applied")
	d.write(strings.Replace(web, `        - {address: "198.51.100.12:80"}`, "        - {address: \"198.51.100.12:80\"}\n        - {address: \"198.51.100.13:80\"}", 1))
	if err := d.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	d.waitLog("configuration reloaded", 1)
	if n := d.count("IPVS change applied") - applied; n != 1 {
		t.Errorf("the reload applied %d operations, want 1 (add one destination):\n%s", n, d.proc.Output())
	}
	if out := d.ipvsadm(); !strings.Contains(out, "198.51.100.13:80") || !strings.Contains(out, "203.0.113.9:22") {
		t.Errorf("after the reload:\n%s", out)
	}

	if _, err := d.h.Run(context.Background(), "ipvsadm", "-C"); err != nil {
		t.Fatal(err)
	}
	d.waitLog("IPVS drift repaired", 4)
	if out := d.ipvsadm(); !strings.Contains(out, "192.0.2.50:80") || strings.Contains(out, "203.0.113.9:22") {
		t.Errorf("after ipvsadm -C and a resync:\n%s", out)
	}

	d.stop()
	if out := d.ipvsadm(); !strings.Contains(out, "192.0.2.50:80") {
		t.Errorf("the table did not survive a stop:\n%s", out)
	}

	d.write("    - {name: other, address: 192.0.2.51:80, check: {type: none}, real_servers: [{address: 198.51.100.11}]}\n")
	d.start()
	if out := d.ipvsadm(); strings.Contains(out, "192.0.2.50:80") || !strings.Contains(out, "192.0.2.51:80") {
		t.Errorf("after a restart without web:\n%s", out)
	}
	d.stop()

	d.start("--flush-on-stop")
	d.stop()
	if out := d.ipvsadm(); strings.Contains(out, "192.0.2.51:80") {
		t.Errorf("--flush-on-stop left:\n%s", out)
	}
}

// listenReal serves TCP on addr inside the director's namespace, where a
// tcp check reaches it; closing the returned listener takes it down.
func (d *director) listenReal(addr string) net.Listener {
	d.t.Helper()
	var l net.Listener
	if err := d.h.Do(func() (err error) { l, err = net.Listen("tcp", addr); return err }); err != nil {
		d.t.Fatal(err)
	}
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	d.t.Cleanup(func() { l.Close() })
	return l
}

func (d *director) waitTable(has, lacks []string) {
	d.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		out := d.ipvsadm()
		ok := true
		for _, s := range has {
			ok = ok && strings.Contains(out, s)
		}
		for _, s := range lacks {
			ok = ok && !strings.Contains(out, s)
		}
		if ok {
			return
		}
		if time.Now().After(deadline) {
			d.t.Fatalf("ipvsadm -Ln never had %v without %v:\n%s\ndirectord:\n%s", has, lacks, out, d.proc.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Health checks drive the table: a real server whose check fails leaves it
// after fall probes, the sorry server comes in when none is healthy, and a
// recovered server returns and sends the sorry server away.
func TestGuestHealthChecksDriveTheTable(t *testing.T) {
	d := newDirector(t)
	for _, a := range []string{"198.51.100.11/32", "198.51.100.12/32"} {
		if out, err := d.h.Run(context.Background(), "ip", "addr", "add", a, "dev", "reals"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
	l11 := d.listenReal("198.51.100.11:80")
	l12 := d.listenReal("198.51.100.12:80")
	d.write(`    - name: web
      address: 192.0.2.50:80
      forwarding: nat
      sorry_server: {address: "198.51.100.99:80"}
      check: {type: tcp, interval: 200ms, timeout: 100ms, rise: 1, fall: 2}
      real_servers:
        - {address: "198.51.100.11:80"}
        - {address: "198.51.100.12:80"}
`)
	d.start()
	d.waitTable([]string{"198.51.100.11:80", "198.51.100.12:80"}, []string{"198.51.100.99:80"})

	l11.Close()
	d.waitTable([]string{"198.51.100.12:80"}, []string{"198.51.100.11:80", "198.51.100.99:80"})
	d.waitLog("real server down", 1)
	if !strings.Contains(string(d.proc.Output()), "connect 198.51.100.11:80") {
		t.Errorf("the down transition does not say why:\n%s", d.proc.Output())
	}

	l12.Close()
	d.waitTable([]string{"198.51.100.99:80"}, []string{"198.51.100.11:80", "198.51.100.12:80"})

	d.listenReal("198.51.100.11:80")
	d.waitTable([]string{"198.51.100.11:80"}, []string{"198.51.100.99:80", "198.51.100.12:80"})
	d.stop()
}

// A service below its quorum faults the VRRP instance that tracks it, and
// the peer, whose checks pass, takes over (keepalived's quorum_down).
func TestGuestQuorumLossFaultsVRRPAndPeerTakesOver(t *testing.T) {
	lab := netlab.New(t)
	var ds []*director
	var reals []net.Listener
	for i, name := range []string{"lb1", "lb2"} {
		d := newDirectorOn(t, lab, name, []string{"192.0.2.11/24", "192.0.2.12/24"}[i])
		// Each director's check reaches its own listener on the reals
		// network, so one side can lose quorum alone.
		if out, err := d.h.Run(context.Background(), "ip", "addr", "add", "198.51.100.11/32", "dev", "reals"); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
		reals = append(reals, d.listenReal("198.51.100.11:80"))
		d.writeWith(`    - name: web
      address: 192.0.2.50:80
      forwarding: nat
      quorum: 1
      check: {type: tcp, interval: 200ms, timeout: 100ms, rise: 1, fall: 2}
      real_servers: [{address: "198.51.100.11:80"}]
`, fmt.Sprintf(`vrrp:
  instances:
    - name: VI_1
      interface: eth0
      vrid: 51
      priority: %d
      advert_interval: 100ms
      virtual_addresses: [192.0.2.50]
      track:
        services: [{name: web, weight: 0}]
`, []int{150, 100}[i]))
		d.start()
		ds = append(ds, d)
	}
	lb1, lb2 := ds[0], ds[1]
	lb1.waitLog("to=MASTER", 1)
	lb2.waitLog("to=BACKUP", 1)

	reals[0].Close()
	lb1.waitLog("to=FAULT", 1)
	lb2.waitLog("to=MASTER", 1)
	if !strings.Contains(string(lb1.proc.Output()), "tracked service web is down") {
		t.Errorf("lb1's fault does not name the service:\n%s", lb1.proc.Output())
	}

	lb1.listenReal("198.51.100.11:80")
	lb1.waitLog("to=MASTER", 2)
	lb2.waitLog("to=BACKUP", 2)
}
