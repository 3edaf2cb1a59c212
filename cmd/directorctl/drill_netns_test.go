package main

import (
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mdlayher/arp"

	"github.com/directord/directord/internal/control"
	"github.com/directord/directord/internal/netlab"
)

// directorctl drill between two real directord nodes: the master hands
// over, the report's timeline matches what a client namespace sees (the
// VIP's ARP answers moving from lb1's MAC to lb2's), --return takes it
// back, and a drill on the backup is refused.
func TestNetnsDrillHandsOverAndReturns(t *testing.T) {
	lab := netlab.New(t)
	bin := netlab.Binary(t, "./cmd/directord")
	client := lab.AddHost("client", "192.0.2.100/24")
	type director struct {
		h    *netlab.Host
		sock string
	}
	var ds []director
	for i, name := range []string{"lb1", "lb2"} {
		h := lab.AddHost(name, fmt.Sprintf("192.0.2.%d/24", 11+i))
		dir := t.TempDir()
		sock := filepath.Join(dir, "ctl.sock")
		cfg := fmt.Sprintf(`node: {name: %s, state_dir: %s/state, control_socket: %s, log: {level: info, format: text}}
vrrp:
  instances:
    - name: VI_1
      interface: eth0
      vrid: 51
      priority: %d
      advert_interval: 100ms
      virtual_addresses: [192.0.2.50]
      garp: {repeat: 2, interval: 10ms, master_delay: 0s}
`, name, dir, sock, []int{150, 100}[i])
		path := filepath.Join(dir, "directord.yaml")
		if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
		p := h.Start(bin, "-c", path)
		t.Cleanup(func() { p.Signal(syscall.SIGTERM); p.Wait(10 * time.Second) })
		ds = append(ds, director{h, sock})
	}
	state := func(d director) string {
		rc, out, _ := runCtl(t, "-s", d.sock, "--json", "status")
		var st control.Status
		if rc != exitOK || json.Unmarshal([]byte(out), &st) != nil || len(st.Instances) == 0 {
			return ""
		}
		return st.Instances[0].State
	}
	waitState := func(d director, want string) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for state(d) != want {
			if time.Now().After(deadline) {
				t.Fatalf("%s: VI_1 not %s within 10s (is %q)", d.h.Label, want, state(d))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	waitState(ds[0], "MASTER")
	waitState(ds[1], "BACKUP")

	// The client asks who has the VIP every millisecond.
	vip := netip.MustParseAddr("192.0.2.50")
	type answer struct {
		at  time.Time
		mac string
	}
	var mu sync.Mutex
	var answers []answer
	var c *arp.Client
	if err := client.Do(func() error {
		ifi, err := net.InterfaceByName("eth0")
		if err != nil {
			return err
		}
		c, err = arp.Dial(ifi)
		return err
	}); err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			case <-time.After(time.Millisecond):
			}
			_ = c.Request(vip)
		}
	}()
	go func() {
		defer wg.Done()
		for {
			_ = c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			p, _, err := c.Read()
			select {
			case <-stop:
				return
			default:
			}
			if err == nil && p.Operation == arp.OperationReply && p.SenderIP == vip {
				mu.Lock()
				answers = append(answers, answer{time.Now(), p.SenderHardwareAddr.String()})
				mu.Unlock()
			}
		}
	}()
	defer func() { close(stop); wg.Wait(); c.Close() }()
	time.Sleep(100 * time.Millisecond)

	if rc, _, errOut := runCtl(t, "-s", ds[1].sock, "drill", "VI_1"); rc != exitFail || !strings.Contains(errOut, "VI_1 is BACKUP on this node, not MASTER: run the drill on the master (master seen: 192.0.2.11)") {
		t.Errorf("drill on the backup: exit %d, %q", rc, errOut)
	}

	start := time.Now()
	rc, out, errOut := runCtl(t, "-s", ds[0].sock, "--json", "drill", "VI_1", "--return")
	if rc != exitOK {
		t.Fatalf("drill: exit %d: %s", rc, errOut)
	}
	var rep control.DrillReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	t.Logf("drill report: %+v", rep)
	if rep.PeerAdvertMS < 0 || rep.VIPAnswerMS < 0 || rep.TakeBackMS < 0 || rep.PeerAdvertMS > rep.VIPAnswerMS+20 {
		t.Fatalf("incomplete drill: %+v", rep)
	}
	if rep.Started.Before(start) || rep.Started.After(time.Now()) {
		t.Fatalf("drill started at %v, outside the call (%v to now)", rep.Started, start)
	}
	// The client's reader may run late on a loaded host: wait for it to
	// have recorded the VIP's move to lb2 and back to lb1.
	mac1, mac2 := ds[0].h.MAC().String(), ds[1].h.MAC().String()
	var firstLB2, backLB1 time.Time
	var seen int
	for deadline := time.Now().Add(3 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		mu.Lock()
		firstLB2, backLB1, seen = time.Time{}, time.Time{}, len(answers)
		for _, a := range answers {
			if a.at.Before(rep.Started) {
				continue
			}
			if firstLB2.IsZero() && a.mac == mac2 {
				firstLB2 = a.at
			}
			if !firstLB2.IsZero() && backLB1.IsZero() && a.mac == mac1 {
				backLB1 = a.at
			}
		}
		mu.Unlock()
		if !backLB1.IsZero() || time.Now().After(deadline) {
			break
		}
	}
	if firstLB2.IsZero() || backLB1.IsZero() {
		t.Fatalf("of %d ARP answers, the client never saw the VIP move to lb2 (%s, first at %v) and back to lb1 (%s, at %v)",
			seen, mac2, firstLB2, mac1, backLB1)
	}
	msSince := func(at time.Time) float64 { return float64(at.Sub(rep.Started).Microseconds()) / 1000 }
	clientMS := msSince(firstLB2)
	t.Logf("client: first answer from lb2 at %.1f ms, lb1 again at %.1f ms; drill: VIP answered from the peer at %.1f ms",
		clientMS, msSince(backLB1), rep.VIPAnswerMS)
	// Both clocks are this host's and count from the drill's start; the
	// client asks every millisecond, the drill every 5.
	if d := clientMS - rep.VIPAnswerMS; d < -30 || d > 30 {
		t.Errorf("the drill says the VIP answered from the peer at %.1f ms, the client saw it at %.1f ms", rep.VIPAnswerMS, clientMS)
	}
	waitState(ds[0], "MASTER")
	waitState(ds[1], "BACKUP")
}
