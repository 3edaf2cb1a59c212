package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/directord/directord/internal/config"
)

type fakeHandler struct {
	Broker
	reloadErr error
}

func (f *fakeHandler) Status() (Status, error) {
	return Status{Node: "lb1", Instances: []InstanceStatus{{Name: "VI_1", State: "MASTER", Priority: 150}}}, nil
}
func (f *fakeHandler) IPVS() (IPVSTable, error) {
	return IPVSTable{}, errors.New("no IPVS in this kernel")
}
func (f *fakeHandler) Conns() ([]Conn, error)        { return nil, nil }
func (f *fakeHandler) Health() (HealthReport, error) { return HealthReport{}, nil }
func (f *fakeHandler) Reload() error                 { return f.reloadErr }
func (f *fakeHandler) Drill(name string, ret bool) (DrillReport, error) {
	return DrillReport{Instance: name, TakeBackMS: map[bool]float64{true: 1, false: -1}[ret]}, nil
}

func serve(t *testing.T, h Handler) *Server {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run", "directord.sock")
	s, err := Listen(path, h, nil)
	if err != nil {
		t.Fatal(err)
	}
	go s.Serve()
	t.Cleanup(func() { s.Close() })
	return s
}

func TestSocketIsPrivateAndAnswers(t *testing.T) {
	h := &fakeHandler{}
	s := serve(t, h)
	fi, err := os.Stat(s.Path())
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("socket mode %v, want 0600", perm)
	}
	r, err := Call(s.Path(), Request{Command: CmdStatus}, time.Second)
	if err != nil || !r.OK || !strings.Contains(string(r.Data), `"name":"VI_1"`) {
		t.Errorf("status = %+v, %v", r, err)
	}
	r, err = Call(s.Path(), Request{Command: CmdIPVS}, time.Second)
	if err != nil || r.OK || r.Error != "no IPVS in this kernel" {
		t.Errorf("ipvs = %+v, %v; want the handler's error", r, err)
	}
	r, err = Call(s.Path(), Request{Command: "frobnicate"}, time.Second)
	if err != nil || r.OK || !strings.Contains(r.Error, `unknown command "frobnicate"`) {
		t.Errorf("unknown command = %+v, %v", r, err)
	}
	// Garbage instead of JSON gets an error, and the server goes on.
	c, err := net.Dial("unix", s.Path())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("{not json\n"))
	b := make([]byte, 512)
	n, _ := c.Read(b)
	c.Close()
	if !strings.Contains(string(b[:n]), "bad request") {
		t.Errorf("garbage request answered %q", b[:n])
	}
	if r, err := Call(s.Path(), Request{Command: CmdStatus}, time.Second); err != nil || !r.OK {
		t.Errorf("status after garbage = %+v, %v", r, err)
	}
}

func TestReloadErrorsComeBackOneByOne(t *testing.T) {
	h := &fakeHandler{reloadErr: config.Errors{
		{File: "d.yaml", Line: 3, Column: 5, Path: "vrrp.instances[0].vrid", Msg: "must be 1..255"},
		{File: "d.yaml", Line: 9, Column: 7, Path: "ipvs.virtual_services[0].scheduler", Msg: `unknown scheduler "rrr"`},
	}}
	s := serve(t, h)
	r, err := Call(s.Path(), Request{Command: CmdReload}, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if r.OK || len(r.Errors) != 2 || !strings.Contains(r.Errors[0], "d.yaml:3:5") || !strings.Contains(r.Error, "previous configuration keeps running") {
		t.Errorf("reload = %+v", r)
	}
	h.reloadErr = nil
	if r, err := Call(s.Path(), Request{Command: CmdReload}, time.Second); err != nil || !r.OK {
		t.Errorf("good reload = %+v, %v", r, err)
	}
}

func TestEventsStreamUntilTheClientGoes(t *testing.T) {
	h := &fakeHandler{}
	s := serve(t, h)
	got := make(chan Event, 10)
	stop := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- Events(s.Path(), stop, func(e Event) bool { got <- e; return true })
	}()
	// Publish until the subscription is in place.
	deadline := time.Now().Add(5 * time.Second)
	for len(got) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no event reached the client")
		}
		h.Publish(Event{Kind: "vrrp", Instance: "VI_1", To: "MASTER"})
		time.Sleep(10 * time.Millisecond)
	}
	if e := <-got; e.Instance != "VI_1" || e.To != "MASTER" {
		t.Errorf("event = %+v", e)
	}
	close(stop)
	if err := <-done; err != nil {
		t.Errorf("Events after stop = %v", err)
	}
	// The server drops the subscription once the client has gone.
	deadline = time.Now().Add(5 * time.Second)
	for {
		h.mu.Lock()
		n := len(h.subs)
		h.mu.Unlock()
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d subscriptions left after the client went", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSlowSubscriberIsCutOff(t *testing.T) {
	var b Broker
	c, cancel := b.Subscribe()
	defer cancel()
	for range subscriberBuffer + 1 {
		b.Publish(Event{Kind: "health"})
	}
	n := 0
	for range c {
		n++
	}
	if n != subscriberBuffer {
		t.Errorf("a stalled subscriber got %d events before being cut off, want %d", n, subscriberBuffer)
	}
	cancel() // after the cut-off: no double close
}

func TestSecondDaemonCannotTakeTheSocket(t *testing.T) {
	s := serve(t, &fakeHandler{})
	if _, err := Listen(s.Path(), &fakeHandler{}, nil); err == nil || !strings.Contains(err.Error(), "answers there") {
		t.Errorf("second Listen = %v, want refused", err)
	}
	// A stale socket (nobody listening) is replaced.
	stale := filepath.Join(t.TempDir(), "stale.sock")
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	ln.SetUnlinkOnClose(false)
	ln.Close()
	s2, err := Listen(stale, &fakeHandler{}, nil)
	if err != nil {
		t.Fatalf("Listen over a stale socket: %v", err)
	}
	s2.Close()
	if _, err := os.Stat(stale); !os.IsNotExist(err) {
		t.Errorf("Close left the socket: %v", err)
	}
	// A regular file is not replaced.
	file := filepath.Join(t.TempDir(), "file")
	os.WriteFile(file, nil, 0o644)
	if _, err := Listen(file, &fakeHandler{}, nil); err == nil || !strings.Contains(err.Error(), "not a socket") {
		t.Errorf("Listen over a file = %v", err)
	}
}

func TestCallWithoutDaemonSaysSo(t *testing.T) {
	_, err := Call(filepath.Join(t.TempDir(), "none.sock"), Request{Command: CmdStatus}, time.Second)
	if err == nil || !strings.Contains(err.Error(), "is it running?") {
		t.Errorf("Call with no daemon = %v", err)
	}
}
