package vrrp

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
)

func TestMain(m *testing.M) {
	if spec, ok := os.LookupEnv(memHogEnv); ok {
		if err := memHog(spec); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	code := m.Run()
	netlab.RemoveBinaries()
	os.Exit(code)
}

// node is a directord process in a host namespace, observed through its
// JSON log.
type node struct {
	t      *testing.T
	h      *netlab.Host
	name   string
	cfg    string
	state  string
	proc   *netlab.Proc
	binary string
	// nodeExtra are more keys of the node section, indented as such.
	nodeExtra string
}

// logLine is the part of directord's JSON log the tests read.
type logLine struct {
	Time     time.Time `json:"time"`
	Level    string    `json:"level"`
	Msg      string    `json:"msg"`
	Instance string    `json:"instance"`
	From     string    `json:"from"`
	To       string    `json:"to"`
	Reason   string    `json:"reason"`
	Src      string    `json:"src"`
	VIP      string    `json:"vip"`
}

// newNode writes a config for h: the node section plus the given vrrp
// section, in YAML.
func newNode(t *testing.T, h *netlab.Host, vrrpYAML string) *node {
	t.Helper()
	dir := t.TempDir()
	n := &node{t: t, h: h, name: h.Label, cfg: filepath.Join(dir, "directord.yaml"), state: filepath.Join(dir, "state"), binary: netlab.Binary(t, "./cmd/directord")}
	n.write(vrrpYAML)
	// Registered after t.TempDir, so it runs before the directory is
	// removed: a running directord still writes its state there.
	t.Cleanup(func() {
		if n.proc != nil {
			_ = n.proc.Signal(syscall.SIGTERM)
			_ = n.proc.Wait(10 * time.Second)
		}
	})
	return n
}

func (n *node) write(vrrpYAML string) {
	n.t.Helper()
	if err := os.WriteFile(n.cfg, []byte(n.config(vrrpYAML)), 0o644); err != nil {
		n.t.Fatal(err)
	}
}

// config is the whole file for the given vrrp section.
func (n *node) config(vrrpYAML string) string {
	return fmt.Sprintf("node:\n  name: %s\n  state_dir: %s\n  control_socket: %s/ctl.sock\n  log: {level: debug, format: json}\n%s%s", n.name, n.state, n.state, n.nodeExtra, vrrpYAML)
}

func (n *node) start() {
	n.t.Helper()
	n.proc = n.h.Start(n.binary, "-c", n.cfg)
	n.waitLog(5*time.Second, func(l logLine) bool { return l.Msg == "directord running" })
}

// lines parses the output of the node's current run so far.
func (n *node) lines() []logLine {
	var out []logLine
	sc := bufio.NewScanner(bytes.NewReader(n.proc.Output()))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		// Some lines carry numbers where others carry names (a priority
		// change's from/to): keep the fields that fit.
		err := json.Unmarshal(sc.Bytes(), &l)
		var te *json.UnmarshalTypeError
		if (err == nil || errors.As(err, &te)) && l.Msg != "" {
			out = append(out, l)
		}
	}
	return out
}

func (n *node) waitLog(d time.Duration, match func(logLine) bool) logLine {
	n.t.Helper()
	deadline := time.Now().Add(d)
	for {
		for _, l := range n.lines() {
			if match(l) {
				return l
			}
		}
		if time.Now().After(deadline) {
			n.t.Fatalf("%s: no matching log line within %v; output:\n%s", n.name, d, n.proc.Output())
		}
		select {
		case <-n.proc.Done():
			if time.Now().After(deadline.Add(-d + 50*time.Millisecond)) {
				for _, l := range n.lines() {
					if match(l) {
						return l
					}
				}
				n.t.Fatalf("%s: directord exited; output:\n%s", n.name, n.proc.Output())
			}
		case <-time.After(10 * time.Millisecond):
		}
	}
}

// transitions returns the instance's transitions logged so far.
func (n *node) transitions(instance string) []logLine {
	var out []logLine
	for _, l := range n.lines() {
		if l.Msg == "VRRP transition" && l.Instance == instance {
			out = append(out, l)
		}
	}
	return out
}

// stateOf is the instance's last logged state ("" before any).
func (n *node) stateOf(instance string) string {
	ts := n.transitions(instance)
	if len(ts) == 0 {
		return ""
	}
	return ts[len(ts)-1].To
}

// waitState waits until the instance's last transition is to state and
// returns that transition.
func (n *node) waitState(instance, state string, d time.Duration) logLine {
	n.t.Helper()
	deadline := time.Now().Add(d)
	for {
		if ts := n.transitions(instance); len(ts) > 0 && ts[len(ts)-1].To == state {
			return ts[len(ts)-1]
		}
		if time.Now().After(deadline) {
			last := n.stateOf(instance)
			n.dump()
			n.t.Fatalf("%s: %s not %s within %v (last: %q); output, ending with its goroutines:\n%s", n.name, instance, state, d, last, n.proc.Output())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// dump makes a directord that is still running print every goroutine's
// stack and exit (SIGQUIT), so a failure shows where it was.
func (n *node) dump() {
	select {
	case <-n.proc.Done():
		return
	default:
	}
	if n.proc.Signal(syscall.SIGQUIT) == nil {
		_ = n.proc.Wait(5 * time.Second)
	}
}

func (n *node) stop() {
	n.t.Helper()
	if err := n.proc.Signal(syscall.SIGTERM); err != nil {
		n.t.Fatal(err)
	}
	if err := n.proc.Wait(10 * time.Second); err != nil {
		n.t.Fatalf("%s: exit after SIGTERM: %v\n%s", n.name, err, n.proc.Output())
	}
}

func (n *node) kill() {
	n.t.Helper()
	if err := n.proc.Kill(); err != nil {
		n.t.Fatal(err)
	}
	_ = n.proc.Wait(5 * time.Second)
}

func (n *node) hasAddr(prefix string) bool {
	n.t.Helper()
	out, err := n.h.Run(context.Background(), "ip", "-o", "addr", "show")
	if err != nil {
		n.t.Fatal(err)
	}
	return strings.Contains(string(out), " "+prefix+" ")
}

// instanceYAML is one VRRP instance on eth0 with a VIP and extra keys
// (indented as instance fields).
func instanceYAML(name string, vrid, prio int, interval string, extra string) string {
	return fmt.Sprintf(`    - name: %s
      interface: eth0
      vrid: %d
      priority: %d
      advert_interval: %s
      virtual_addresses: [192.0.2.50]
      garp: {repeat: 2, interval: 10ms, master_delay: 0s}
%s`, name, vrid, prio, interval, extra)
}

func splitFields(s string) []string { return strings.Fields(s) }
