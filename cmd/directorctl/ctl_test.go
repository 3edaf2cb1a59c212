package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/internal/control"
)

// fakeDaemon answers like directord does, from fixed data.
type fakeDaemon struct {
	control.Broker
	reload error
}

var at = time.Date(2026, 11, 21, 12, 0, 1, 0, time.UTC)

func (f *fakeDaemon) Status() (control.Status, error) {
	return control.Status{Node: "lb1", Config: "/etc/directord/directord.yaml", Instances: []control.InstanceStatus{{
		Name: "VI_1", Interface: "eth0", VRID: 51, State: "MASTER", Priority: 100, BasePriority: 150,
		PriorityWhy: "tracked objects adjust the configured 150 by -50", Master: "192.0.2.11", VIPs: []string{"192.0.2.50"},
		LastChangedAt: at, Transitions: []control.Transition{{At: at, Instance: "VI_1", From: "BACKUP", To: "MASTER", Priority: 150, Reason: "master down"}},
	}}}, nil
}

func (f *fakeDaemon) IPVS() (control.IPVSTable, error) {
	return control.IPVSTable{Services: []control.IPVSService{{
		Name: "web", Key: "TCP  192.0.2.50:80", Scheduler: "wrr", Stats: control.Stats{Conns: 7, CPS: 3},
		Reals: []control.IPVSReal{
			{Address: "198.51.100.11:80", Forward: "Masq", Weight: 3, ActiveConns: 2, Health: "up", Stats: control.Stats{Conns: 5}},
			{Address: "198.51.100.12:80", Forward: "Masq", Weight: 0, Health: "down", Reason: "connect 198.51.100.12:80: connection refused"},
		},
	}}}, nil
}

func (f *fakeDaemon) Conns() ([]control.Conn, error) {
	return []control.Conn{{Protocol: "TCP", Client: "192.0.2.100:40000", Virtual: "192.0.2.50:80", Destination: "198.51.100.11:80", State: "ESTABLISHED", ExpiresS: 899}}, nil
}

func (f *fakeDaemon) Health() (control.HealthReport, error) {
	return control.HealthReport{Checks: []control.Check{{Service: "web", Real: "198.51.100.12:80", Type: "tcp", Target: "198.51.100.12:80", State: "down", Reason: "connection refused", LatencyMS: 0.4, Since: at}}}, nil
}

func (f *fakeDaemon) Reload() error { return f.reload }

func (f *fakeDaemon) Drill(name string, ret bool) (control.DrillReport, error) {
	if name != "VI_1" {
		return control.DrillReport{}, errors.New(name + " is BACKUP on this node, not MASTER: run the drill on the master")
	}
	r := control.DrillReport{Node: "lb1", Instance: name, AdvertInterval: "100ms",
		Started: time.Date(2026, 11, 21, 18, 5, 1, 123456789, time.UTC), PeerAdvertMS: 61.5, VIPAnswerMS: 70.25, TakeBackMS: -1,
		Steps: []control.DrillStep{{AtMS: 0, What: "priority-0 advert sent"}, {AtMS: 61.5, What: "first advert from 192.0.2.12 as master"}, {AtMS: 70.25, What: "192.0.2.50 answers ARP from 02:00:00:00:00:02"}}}
	if ret {
		r.TakeBackMS = 400
	}
	return r, nil
}

func fakeSocket(t *testing.T, f *fakeDaemon) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "d.sock")
	s, err := control.Listen(path, f, nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return path
}

func runCtl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	rc := run(args, &out, &errOut)
	return rc, out.String(), errOut.String()
}

func TestStatusIPVSHealthTables(t *testing.T) {
	sock := fakeSocket(t, &fakeDaemon{})
	for _, tt := range []struct {
		args []string
		want []string
	}{
		{[]string{"status"}, []string{"INSTANCE  INTERFACE  VRID  STATE   PRIORITY", "VI_1      eth0       51    MASTER  100       tracked objects adjust the configured 150 by -50  192.0.2.11  192.0.2.50",
			"BACKUP -> MASTER  priority 150  master down"}},
		{[]string{"ipvs"}, []string{"TCP  192.0.2.50:80 wrr [web]", "  -> 198.51.100.11:80             Masq    3      2          0         up",
			"down: connect 198.51.100.12:80: connection refused"}},
		{[]string{"ipvs", "--stats"}, []string{"Conns", "TCP  192.0.2.50:80                        7        0", "  -> 198.51.100.11:80                     5"}},
		{[]string{"ipvs", "--rate"}, []string{"CPS", "TCP  192.0.2.50:80                        3        0"}},
		{[]string{"ipvs", "--conns"}, []string{"TCP  14:59   ESTABLISHED  192.0.2.100:40000  192.0.2.50:80  198.51.100.11:80"}},
		{[]string{"health"}, []string{"web      198.51.100.12:80  tcp   198.51.100.12:80  down", "0.4ms    connection refused"}},
	} {
		rc, out, errOut := runCtl(t, append([]string{"-s", sock}, tt.args...)...)
		if rc != exitOK {
			t.Errorf("%v: exit %d: %s", tt.args, rc, errOut)
			continue
		}
		for _, w := range tt.want {
			if !strings.Contains(out, w) {
				t.Errorf("%v: output lacks %q:\n%s", tt.args, w, out)
			}
		}
	}
}

func TestJSONIsTheDaemonsData(t *testing.T) {
	sock := fakeSocket(t, &fakeDaemon{})
	for _, args := range [][]string{{"--json", "status"}, {"status", "--json"}} {
		rc, out, _ := runCtl(t, append([]string{"-s", sock}, args...)...)
		var st control.Status
		if rc != exitOK || json.Unmarshal([]byte(out), &st) != nil || st.Instances[0].PriorityWhy == "" {
			t.Errorf("%v: exit %d, %q", args, rc, out)
		}
	}
}

func TestReloadReportsEveryError(t *testing.T) {
	f := &fakeDaemon{reload: config.Errors{
		{File: "d.yaml", Line: 3, Column: 5, Path: "vrrp.instances[0].vrid", Msg: "must be 1..255"},
		{File: "d.yaml", Line: 9, Column: 7, Path: "ipvs.virtual_services[0].scheduler", Msg: `unknown scheduler "rrr"`},
	}}
	sock := fakeSocket(t, f)
	rc, _, errOut := runCtl(t, "-s", sock, "reload")
	if rc != exitFail || !strings.Contains(errOut, "d.yaml:3:5") || !strings.Contains(errOut, "d.yaml:9:7") || !strings.Contains(errOut, "previous configuration keeps running") {
		t.Errorf("rejected reload: exit %d, stderr %q", rc, errOut)
	}
	f.reload = nil
	if rc, out, _ := runCtl(t, "-s", sock, "reload"); rc != exitOK || !strings.Contains(out, "configuration reloaded") {
		t.Errorf("good reload: exit %d, %q", rc, out)
	}
	f.reload = errors.New("boom")
	if rc, out, _ := runCtl(t, "-s", sock, "--json", "reload"); rc != exitFail || !strings.Contains(out, `"error":"boom"`) {
		t.Errorf("failed reload --json: exit %d, %q", rc, out)
	}
}

func TestEventLines(t *testing.T) {
	up := false
	for _, tt := range []struct {
		e    control.Event
		want string
	}{
		{control.Event{At: at, Kind: "vrrp", Instance: "VI_1", From: "BACKUP", To: "MASTER", Priority: 150, Reason: "master down"}, "vrrp VI_1 BACKUP -> MASTER priority 150: master down"},
		{control.Event{At: at, Kind: "health", Check: "web 198.51.100.12:80", Up: &up, Reason: "connection refused"}, "health web 198.51.100.12:80 down: connection refused"},
		{control.Event{At: at, Kind: "reload", Reason: "configuration reloaded"}, "reload configuration reloaded"},
	} {
		if got := formatEvent(tt.e); !strings.HasSuffix(got, tt.want) {
			t.Errorf("formatEvent = %q, want suffix %q", got, tt.want)
		}
	}
}

func TestEventsStream(t *testing.T) {
	f := &fakeDaemon{}
	sock := fakeSocket(t, f)
	r, w := io.Pipe()
	done := make(chan int, 1)
	go func() { done <- events(sock, false, w, io.Discard) }()
	lines := make(chan string, 10)
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := r.Read(b)
			if err != nil {
				return
			}
			lines <- string(b[:n])
		}
	}()
	deadline := time.After(5 * time.Second)
	for {
		f.Publish(control.Event{At: at, Kind: "vrrp", Instance: "VI_1", From: "BACKUP", To: "MASTER", Priority: 150, Reason: "x"})
		select {
		case l := <-lines:
			if !strings.Contains(l, "vrrp VI_1 BACKUP -> MASTER") {
				t.Errorf("event line %q", l)
			}
			return
		case <-deadline:
			t.Fatal("no event printed")
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func TestDrillTimeline(t *testing.T) {
	sock := fakeSocket(t, &fakeDaemon{})
	rc, out, errOut := runCtl(t, "-s", sock, "drill", "VI_1")
	if rc != exitOK || !strings.Contains(out, "drill VI_1 on lb1 (advert interval 100ms) started 2026-11-21T18:05:01.123Z\n") || !strings.Contains(out, "+61.5ms  first advert from 192.0.2.12 as master") ||
		!strings.Contains(out, "handover: peer's first advert 61.5 ms, VIP answering from the peer 70.2 ms\n") {
		t.Errorf("drill: exit %d, %q %q", rc, out, errOut)
	}
	if rc, out, _ := runCtl(t, "-s", sock, "drill", "VI_1", "--return"); rc != exitOK || !strings.Contains(out, "MASTER again 400.0 ms") {
		t.Errorf("drill --return: exit %d, %q", rc, out)
	}
	if rc, out, _ := runCtl(t, "-s", sock, "--json", "drill", "--return", "VI_1"); rc != exitOK || !strings.Contains(out, `"take_back_ms":400`) || !strings.Contains(out, `"started":"2026-11-21T18:05:01.123456789Z"`) {
		t.Errorf("drill --json --return: exit %d, %q", rc, out)
	}
	if rc, _, errOut := runCtl(t, "-s", sock, "drill", "VI_2"); rc != exitFail || !strings.Contains(errOut, "run the drill on the master") {
		t.Errorf("drill on a backup: exit %d, %q", rc, errOut)
	}
}
