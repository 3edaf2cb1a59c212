package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/control"
	"github.com/directord/directord/internal/netlab"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

// scrape fetches /metrics from the metrics listener inside h (the socket
// is opened on a thread in h's namespace) and parses it as Prometheus text.
func scrape(t *testing.T, h *netlab.Host) map[string]*dto.MetricFamily {
	t.Helper()
	var body []byte
	err := h.Do(func() error {
		c, err := net.DialTimeout("tcp", "127.0.0.1:9580", 2*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, "GET /metrics HTTP/1.0\r\nAccept: text/plain\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("GET /metrics: %s", resp.Status)
		}
		body, err = io.ReadAll(resp.Body)
		return err
	})
	if err != nil {
		t.Fatalf("scrape: %v", err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not Prometheus text: %v\n%s", err, body)
	}
	return fams
}

// metricValue returns the value of the sample of name whose labels
// include the given pairs.
func metricValue(t *testing.T, fams map[string]*dto.MetricFamily, name string, labels ...string) float64 {
	t.Helper()
	f, ok := fams[name]
	if !ok {
		t.Fatalf("no metric %s", name)
	}
	for _, m := range f.GetMetric() {
		have := map[string]string{}
		for _, l := range m.GetLabel() {
			have[l.GetName()] = l.GetValue()
		}
		match := true
		for i := 0; i+1 < len(labels); i += 2 {
			match = match && have[labels[i]] == labels[i+1]
		}
		if !match {
			continue
		}
		switch {
		case m.Counter != nil:
			return m.Counter.GetValue()
		case m.Gauge != nil:
			return m.Gauge.GetValue()
		}
	}
	t.Fatalf("no sample of %s with %v", name, labels)
	return 0
}

func TestMain(m *testing.M) {
	code := m.Run()
	netlab.RemoveBinaries()
	os.Exit(code)
}

// directorctl against a real directord over its control socket: status,
// health, events, and reloads. A client namespace connects to a service
// on the VIP every 10 ms throughout: 20 reloads with changes that do not
// touch VRRP fail no connection and cause no VRRP transition; a broken
// file is rejected with every error, the daemon keeps its state, and
// directorctl exits non-zero.
func TestNetnsDirectorctlAgainstDirectord(t *testing.T) {
	lab := netlab.New(t)
	lb := lab.AddHost("lb", "192.0.2.11/24")
	client := lab.AddHost("client", "192.0.2.100/24")
	bin := netlab.Binary(t, "./cmd/directord")
	dir := t.TempDir()
	cfgPath, sock := filepath.Join(dir, "directord.yaml"), filepath.Join(dir, "ctl.sock")
	write := func(extra string) {
		t.Helper()
		cfg := fmt.Sprintf(`node: {name: lb, state_dir: %s, control_socket: %s, metrics_address: "127.0.0.1:9580", log: {level: info, format: text}}
vrrp:
  instances:
    - name: VI_1
      interface: eth0
      vrid: 51
      priority: 150
      advert_interval: 100ms
      virtual_addresses: [192.0.2.50]
%s`, filepath.Join(dir, "state"), sock, extra)
		if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("")
	// systemd's notification socket, as Type=notify sets it up.
	notifyPath := filepath.Join(dir, "notify.sock")
	notifyConn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: notifyPath, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	defer notifyConn.Close()
	var notifyMu sync.Mutex
	var notified []string
	go func() {
		b := make([]byte, 1024)
		for {
			n, err := notifyConn.Read(b)
			if err != nil {
				return
			}
			notifyMu.Lock()
			notified = append(notified, string(b[:n]))
			notifyMu.Unlock()
		}
	}()
	t.Setenv("NOTIFY_SOCKET", notifyPath)
	proc := lb.Start(bin, "-c", cfgPath)
	t.Cleanup(func() { proc.Signal(syscall.SIGTERM); proc.Wait(10 * time.Second) })

	status := func() control.Status {
		t.Helper()
		rc, out, errOut := runCtl(t, "-s", sock, "--json", "status")
		if rc != exitOK {
			t.Fatalf("status: exit %d: %s\ndirectord:\n%s", rc, errOut, proc.Output())
		}
		var st control.Status
		if err := json.Unmarshal([]byte(out), &st); err != nil {
			t.Fatal(err)
		}
		return st
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		rc, out, _ := runCtl(t, "-s", sock, "--json", "status")
		if rc == exitOK && strings.Contains(out, `"state":"MASTER"`) {
			_, out, _ = runCtl(t, "-s", sock, "status")
			if !strings.Contains(out, "VI_1      eth0       51    MASTER  150       configured") || !strings.Contains(out, "192.0.2.50") {
				t.Errorf("status:\n%s", out)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("VI_1 not MASTER within 10s:\n%s", proc.Output())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if info, err := os.Stat(sock); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("control socket: %v, %v; want mode 0600", info, err)
	}
	m0 := scrape(t, lb)
	if v := metricValue(t, m0, "directord_vrrp_state", "instance", "VI_1", "state", "MASTER"); v != 1 {
		t.Errorf("directord_vrrp_state{VI_1,MASTER} = %v, want 1", v)
	}
	if v := metricValue(t, m0, "directord_vrrp_state", "instance", "VI_1", "state", "BACKUP"); v != 0 {
		t.Errorf("directord_vrrp_state{VI_1,BACKUP} = %v, want 0", v)
	}
	before := status().Instances[0]
	if before.TransitionsN == 0 || len(before.Transitions) == 0 || before.Transitions[len(before.Transitions)-1].To != "MASTER" {
		t.Errorf("status transitions: %+v", before)
	}
	if rc, out, _ := runCtl(t, "-s", sock, "health"); rc != exitOK || !strings.Contains(out, "no health checks") {
		t.Errorf("health: exit %d, %q", rc, out)
	}
	if rc, _, errOut := runCtl(t, "-s", sock, "ipvs"); rc != exitFail || !strings.Contains(errOut, "no IPVS") {
		t.Errorf("ipvs on a kernel without IPVS: exit %d, %q", rc, errOut)
	}

	// Events, from a subscriber that stays connected.
	var evMu sync.Mutex
	var evs []control.Event
	stopEvents := make(chan struct{})
	evDone := make(chan error, 1)
	go func() {
		evDone <- control.Events(sock, stopEvents, func(e control.Event) bool {
			evMu.Lock()
			evs = append(evs, e)
			evMu.Unlock()
			return true
		})
	}()

	// A service on the VIP, and a client connecting every 10 ms.
	var ln net.Listener
	if err := lb.Do(func() (err error) { ln, err = net.Listen("tcp", ":80"); return err }); err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			io.WriteString(c, "lb\n")
			c.Close()
		}
	}()
	var okConns, failedConns atomic.Int64
	stopClient := make(chan struct{})
	clientDone := make(chan struct{})
	go func() {
		defer close(clientDone)
		client.Do(func() error {
			for {
				select {
				case <-stopClient:
					return nil
				case <-time.After(10 * time.Millisecond):
				}
				c, err := net.DialTimeout("tcp", "192.0.2.50:80", 500*time.Millisecond)
				if err == nil {
					c.SetDeadline(time.Now().Add(time.Second))
					var b [3]byte
					_, err = io.ReadFull(c, b[:])
					c.Close()
				}
				if err != nil {
					failedConns.Add(1)
				} else {
					okConns.Add(1)
				}
			}
		})
	}()
	time.Sleep(300 * time.Millisecond)

	for i := range 20 {
		write(fmt.Sprintf("# reload %d\n", i))
		if rc, out, errOut := runCtl(t, "-s", sock, "reload"); rc != exitOK || !strings.Contains(out, "configuration reloaded") {
			t.Fatalf("reload %d: exit %d, %q %q", i, rc, out, errOut)
		}
		time.Sleep(50 * time.Millisecond)
	}
	// A broken file: rejected with every error, nothing changes.
	if err := os.WriteFile(cfgPath, []byte("node: {name: lb, state_dir: "+filepath.Join(dir, "state")+", control_socket: "+sock+"}\nvrrp:\n  instances:\n    - name: VI_1\n      interface: eth0\n      vrid: 300\n      priority: 150\n      bogus_key: 1\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	rc, _, errOut := runCtl(t, "-s", sock, "reload")
	if rc != exitFail || !strings.Contains(errOut, "directord.yaml:6:7: vrrp.instances[0].vrid: 300 is out of range") || !strings.Contains(errOut, "bogus_key") || !strings.Contains(errOut, "previous configuration keeps running") {
		t.Errorf("broken reload: exit %d, stderr:\n%s", rc, errOut)
	}
	time.Sleep(300 * time.Millisecond)
	close(stopClient)
	<-clientDone

	m1 := scrape(t, lb)
	if a, b := metricValue(t, m0, "directord_vrrp_adverts_sent_total", "instance", "VI_1"), metricValue(t, m1, "directord_vrrp_adverts_sent_total", "instance", "VI_1"); b <= a {
		t.Errorf("directord_vrrp_adverts_sent_total did not move: %v then %v", a, b)
	}
	if ok, bad := metricValue(t, m1, "directord_reloads_total", "result", "ok"), metricValue(t, m1, "directord_reloads_total", "result", "rejected"); ok != 20 || bad != 1 {
		t.Errorf("directord_reloads_total ok %v, rejected %v; want 20, 1", ok, bad)
	}
	after := status().Instances[0]
	if after.State != "MASTER" || after.TransitionsN != before.TransitionsN {
		t.Errorf("after the reloads: %s with %d transitions, want MASTER with %d", after.State, after.TransitionsN, before.TransitionsN)
	}
	if okConns.Load() < 50 || failedConns.Load() != 0 {
		t.Errorf("client during the reloads: %d connections succeeded, %d failed; want none failed", okConns.Load(), failedConns.Load())
	}
	t.Logf("client during 20 reloads and a rejected one: %d connections, %d failed", okConns.Load(), failedConns.Load())

	// The subscriber saw the reloads and the rejection, and no VRRP
	// transition.
	close(stopEvents)
	if err := <-evDone; err != nil {
		t.Errorf("events: %v", err)
	}
	evMu.Lock()
	var reloaded, rejected, vrrpEvents int
	for _, e := range evs {
		switch {
		case e.Kind == "reload" && e.Reason == "configuration reloaded":
			reloaded++
		case e.Kind == "reload" && strings.HasPrefix(e.Reason, "rejected"):
			rejected++
		case e.Kind == "vrrp":
			vrrpEvents++
		}
	}
	evMu.Unlock()
	if reloaded != 20 || rejected != 1 || vrrpEvents != 0 {
		t.Errorf("events: %d reloads, %d rejected, %d VRRP transitions; want 20, 1, 0", reloaded, rejected, vrrpEvents)
	}
	if bytes.Count(proc.Output(), []byte("reload rejected")) < 2 {
		t.Errorf("directord did not log each error of the rejected file:\n%s", proc.Output())
	}

	// systemd heard READY at startup, RELOADING and READY around each of
	// the 21 reloads, and STOPPING at the end.
	if err := proc.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.Wait(10 * time.Second); err != nil {
		t.Errorf("directord exit: %v", err)
	}
	time.Sleep(100 * time.Millisecond)
	notifyMu.Lock()
	defer notifyMu.Unlock()
	var ready, reloading int
	for _, m := range notified {
		if strings.HasPrefix(m, "READY=1\nSTATUS=1 VRRP instances") {
			ready++
		}
		if strings.HasPrefix(m, "RELOADING=1\nMONOTONIC_USEC=") {
			reloading++
		}
	}
	first, last := "", ""
	if len(notified) > 0 {
		first, last = notified[0], notified[len(notified)-1]
	}
	if !strings.HasPrefix(first, "READY=1") || ready != 22 || reloading != 21 || last != "STOPPING=1" {
		t.Errorf("notifications: first %q, %d READY, %d RELOADING, last %q; want READY first, 22 READY, 21 RELOADING, STOPPING last",
			first, ready, reloading, last)
	}
}
