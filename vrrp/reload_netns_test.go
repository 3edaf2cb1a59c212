package vrrp

import (
	"fmt"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
)

// A reload applies the vrrp section as a difference: an unchanged instance
// keeps its state, a virtual address added to a master instance is bound
// (and one removed is released) without a transition, an added instance
// starts, a removed one stops, and a lowered priority hands that instance
// alone to the peer.
func TestNetnsReloadAppliesTheVRRPDifference(t *testing.T) {
	lab := netlab.New(t)
	lb1 := newNode(t, lab.AddHost("lb1", "192.0.2.11/24"), "")
	lb2 := newNode(t, lab.AddHost("lb2", "192.0.2.12/24"), "")
	inst := func(name string, vrid, prio int, vips string) string {
		return fmt.Sprintf(`    - name: %s
      interface: eth0
      vrid: %d
      priority: %d
      advert_interval: 100ms
      virtual_addresses: [%s]
      garp: {repeat: 2, interval: 10ms, master_delay: 0s}
`, name, vrid, prio, vips)
	}
	conf := func(prio1, prio2 int, vips1 string, third bool) string {
		s := "vrrp:\n  instances:\n" + inst("VI_1", 51, prio1, vips1) + inst("VI_2", 52, prio2, "192.0.2.60")
		if third {
			s += inst("VI_3", 53, prio1, "192.0.2.70")
		}
		return s
	}
	lb1.write(conf(150, 150, "192.0.2.50", false))
	lb2.write(conf(100, 100, "192.0.2.50", false))
	lb1.start()
	lb2.start()
	for _, i := range []string{"VI_1", "VI_2"} {
		lb1.waitState(i, "MASTER", 3*time.Second)
		lb2.waitState(i, "BACKUP", 3*time.Second)
	}
	reload := func(nodes ...*node) {
		t.Helper()
		for _, n := range nodes {
			before := n.count("configuration reloaded")
			if err := n.proc.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			n.waitLog(5*time.Second, func(l logLine) bool {
				return l.Msg == "configuration reloaded" && n.count("configuration reloaded") > before
			})
		}
	}
	t1, t2 := len(lb1.transitions("VI_1")), len(lb1.transitions("VI_2"))
	b1, b2 := len(lb2.transitions("VI_1")), len(lb2.transitions("VI_2"))

	// VI_1 gains an address, VI_3 appears, VI_2 is unchanged.
	lb1.write(conf(150, 150, "192.0.2.50, 192.0.2.51", true))
	lb2.write(conf(100, 100, "192.0.2.50, 192.0.2.51", true))
	reload(lb1, lb2)
	lb1.waitState("VI_3", "MASTER", 3*time.Second)
	lb2.waitState("VI_3", "BACKUP", 3*time.Second)
	waitFor(t, 3*time.Second, "lb1 binds the added VIP", func() bool { return lb1.hasAddr("192.0.2.51/32") })
	time.Sleep(500 * time.Millisecond) // five advert intervals: any flap would show
	if len(lb1.transitions("VI_1")) != t1 || len(lb1.transitions("VI_2")) != t2 || len(lb2.transitions("VI_1")) != b1 || len(lb2.transitions("VI_2")) != b2 {
		t.Errorf("the reload made unchanged or in-place instances change state:\nlb1 VI_1 %v\nlb1 VI_2 %v\nlb2 VI_1 %v\nlb2 VI_2 %v",
			lb1.transitions("VI_1")[t1:], lb1.transitions("VI_2")[t2:], lb2.transitions("VI_1")[b1:], lb2.transitions("VI_2")[b2:])
	}
	if lb2.hasAddr("192.0.2.51/32") {
		t.Error("the backup bound the added VIP")
	}

	// VI_3 goes, VI_1 loses the address again, and VI_2's priority on
	// lb1 drops below lb2's: lb2 preempts VI_2, and only VI_2.
	lb2.write(conf(100, 100, "192.0.2.50", false))
	lb1.write(conf(150, 50, "192.0.2.50", false))
	reload(lb2, lb1)
	lb1.waitState("VI_3", "INIT", 3*time.Second)
	waitFor(t, 3*time.Second, "lb1 releases the removed VIPs", func() bool {
		return !lb1.hasAddr("192.0.2.51/32") && !lb1.hasAddr("192.0.2.70/32")
	})
	lb2.waitState("VI_2", "MASTER", 3*time.Second)
	lb1.waitState("VI_2", "BACKUP", 3*time.Second)
	if !lb1.hasAddr("192.0.2.50/32") || len(lb1.transitions("VI_1")) != t1 {
		t.Errorf("VI_1 on lb1 after the second reload: holds .50 %v, transitions %v", lb1.hasAddr("192.0.2.50/32"), lb1.transitions("VI_1")[t1:])
	}

	// A reload that changes the tracked scripts is refused whole.
	lb1.write(conf(150, 50, "192.0.2.50", false) + "  scripts:\n    - {name: chk, command: [/bin/true]}\n")
	if err := lb1.proc.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	lb1.waitLog(5*time.Second, func(l logLine) bool { return l.Msg == "reload failed; still running the previous configuration" })
}

// count is how many log lines have msg.
func (n *node) count(msg string) int {
	c := 0
	for _, l := range n.lines() {
		if l.Msg == msg {
			c++
		}
	}
	return c
}

func waitFor(t *testing.T, d time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("within %v: %s did not happen", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
