package ipvs_test

import (
	"bytes"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/directord/directord/ipvs"
	"github.com/directord/directord/ipvs/ipvstest"
)

// twoServices is a director with a web and an api service.
const twoServices = `ipvs:
  virtual_services:
    - name: web
      address: 192.0.2.50:80
      real_servers:
        - {address: 198.51.100.11}
        - {address: 198.51.100.12}
        - {address: 198.51.100.13}
    - name: api
      address: 192.0.2.50:8080
      forwarding: nat
      real_servers:
        - {address: "198.51.100.21:8080", weight: 2}
`

// webOnly is twoServices after the api service was removed from the file.
const webOnly = `ipvs:
  virtual_services:
    - name: web
      address: 192.0.2.50:80
      real_servers:
        - {address: 198.51.100.11}
        - {address: 198.51.100.12}
        - {address: 198.51.100.13}
`

var (
	webKey  = tcp("192.0.2.50:80")
	apiKey  = tcp("192.0.2.50:8080")
	handKey = tcp("192.0.2.99:80")
)

// installed is what the kernel holds once twoServices is applied.
func installed() []ipvs.Entry {
	return []ipvs.Entry{
		kentry(wlc(webKey), dr("198.51.100.11:80", 1), dr("198.51.100.12:80", 1), dr("198.51.100.13:80", 1)),
		kentry(wlc(apiKey), nat("198.51.100.21:8080", 2)),
	}
}

// handMade is a service an operator created with ipvsadm.
func handMade() ipvs.Entry {
	s := wlc(handKey)
	s.Scheduler = "rr"
	return kentry(s, nat("198.51.100.99:80", 5))
}

// kentry is a service as ipvstest.Kernel.Table returns it.
func kentry(s ipvs.Service, dests ...ipvs.Destination) ipvs.Entry {
	e := ipvs.Entry{Service: s}
	for _, d := range dests {
		e.Destinations = append(e.Destinations, ipvs.DestEntry{Destination: d})
	}
	return e
}

func newManager(t *testing.T, k ipvs.Kernel, dir string) (*ipvs.Manager, *bytes.Buffer) {
	t.Helper()
	var log bytes.Buffer
	m, err := ipvs.NewManager(k, dir, slog.New(slog.NewTextHandler(&log, nil)))
	if err != nil {
		t.Fatal(err)
	}
	return m, &log
}

func desired(t *testing.T, yaml string) ipvs.Table {
	t.Helper()
	return ipvs.Desired(parse(t, yaml), nil)
}

func mustApply(t *testing.T, m *ipvs.Manager, d ipvs.Table) ipvs.Result {
	t.Helper()
	res, err := m.Apply(d)
	if err != nil {
		t.Fatalf("Apply: %v", err)
	}
	return res
}

func checkTable(t *testing.T, k *ipvstest.Kernel, want []ipvs.Entry) {
	t.Helper()
	slices.SortFunc(want, func(a, b ipvs.Entry) int {
		x, y := a.Service.Key, b.Service.Key
		for _, c := range []int{compareInt(int(x.FWMark), int(y.FWMark)), compareInt(int(x.Protocol), int(y.Protocol)),
			x.Address.Compare(y.Address), compareInt(int(x.Port), int(y.Port))} {
			if c != 0 {
				return c
			}
		}
		return 0
	})
	if diff := cmp.Diff(want, k.Table(), addrEq); diff != "" {
		t.Errorf("kernel table (-want +got):\n%s", diff)
	}
}

func compareInt(a, b int) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

func opStrings(ops []ipvs.Op) []string {
	var s []string
	for _, op := range ops {
		s = append(s, op.String())
	}
	return s
}

func TestManagerApplyFromEmpty(t *testing.T) {
	k := ipvstest.New()
	m, _ := newManager(t, k, t.TempDir())
	res := mustApply(t, m, desired(t, twoServices))
	want := []string{
		"add service TCP 192.0.2.50:80 (wlc)",
		"add destination 198.51.100.11:80 to TCP 192.0.2.50:80 (Route, weight 1)",
		"add destination 198.51.100.12:80 to TCP 192.0.2.50:80 (Route, weight 1)",
		"add destination 198.51.100.13:80 to TCP 192.0.2.50:80 (Route, weight 1)",
		"add service TCP 192.0.2.50:8080 (wlc)",
		"add destination 198.51.100.21:8080 to TCP 192.0.2.50:8080 (Masq, weight 2)",
	}
	if diff := cmp.Diff(want, opStrings(res.Applied)); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}
	checkTable(t, k, installed())
	if diff := cmp.Diff([]ipvs.ServiceKey{webKey, apiKey}, m.Owned(), addrEq); diff != "" {
		t.Errorf("owned (-want +got):\n%s", diff)
	}
	if c := m.Counters(); c != (ipvs.Counters{OpsApplied: 6}) {
		t.Errorf("counters = %+v, want 6 applied", c)
	}
}

func TestManagerSecondApplyChangesNothing(t *testing.T) {
	k := ipvstest.New()
	m, _ := newManager(t, k, t.TempDir())
	d := desired(t, twoServices)
	mustApply(t, m, d)
	k.ResetCalls()
	res := mustApply(t, m, d)
	if len(res.Applied)+len(res.Failed)+len(res.Skipped) != 0 {
		t.Errorf("second Apply did %v", opStrings(res.Applied))
	}
	// Nothing changed since the last Apply: not even a read.
	if diff := cmp.Diff([]ipvstest.Call(nil), k.Calls(), addrEq); diff != "" {
		t.Errorf("kernel calls (-want +got):\n%s", diff)
	}
}

func TestManagerReloadAddsOneRealServer(t *testing.T) {
	k := ipvstest.New()
	m, _ := newManager(t, k, t.TempDir())
	mustApply(t, m, desired(t, twoServices))
	k.ResetCalls()
	more := strings.Replace(twoServices, "        - {address: 198.51.100.13}\n",
		"        - {address: 198.51.100.13}\n        - {address: 198.51.100.14}\n", 1)
	res := mustApply(t, m, desired(t, more))
	if diff := cmp.Diff([]string{"add destination 198.51.100.14:80 to TCP 192.0.2.50:80 (Route, weight 1)"}, opStrings(res.Applied)); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}
	// Only the changed service is read back, not the table.
	want := []ipvstest.Call{{Method: "Service", Key: webKey}, {Method: "NewDestination", Key: webKey, Dest: dk("198.51.100.14:80")}}
	if diff := cmp.Diff(want, k.Calls(), addrEq); diff != "" {
		t.Errorf("kernel calls (-want +got):\n%s", diff)
	}
}

func TestManagerRepairsDrift(t *testing.T) {
	for _, tc := range []struct {
		name    string
		drift   func(k *ipvstest.Kernel)
		repairs []string
		reason  string
	}{{
		name:  "ipvsadm -C: exactly the owned services come back, hand-made ones are gone for good",
		drift: func(k *ipvstest.Kernel) { k.Flush() },
		repairs: []string{
			"add service TCP 192.0.2.50:80 (wlc)",
			"add destination 198.51.100.11:80 to TCP 192.0.2.50:80 (Route, weight 1)",
			"add destination 198.51.100.12:80 to TCP 192.0.2.50:80 (Route, weight 1)",
			"add destination 198.51.100.13:80 to TCP 192.0.2.50:80 (Route, weight 1)",
			"add service TCP 192.0.2.50:8080 (wlc)",
			"add destination 198.51.100.21:8080 to TCP 192.0.2.50:8080 (Masq, weight 2)",
		},
		reason: "missing: someone ran ipvsadm -C?",
	}, {
		name:    "ipvsadm -d: the real server comes back",
		drift:   func(k *ipvstest.Kernel) { k.DelDestination(webKey, dk("198.51.100.12:80")) },
		repairs: []string{"add destination 198.51.100.12:80 to TCP 192.0.2.50:80 (Route, weight 1)"},
		reason:  "real server removed outside directord",
	}, {
		name:    "ipvsadm -e -w 0: the weight is set back",
		drift:   func(k *ipvstest.Kernel) { k.UpdateDestination(webKey, dr("198.51.100.12:80", 0)) },
		repairs: []string{"edit destination 198.51.100.12:80 of TCP 192.0.2.50:80: weight 0 -> 1"},
		reason:  "real server changed outside directord",
	}, {
		name:    "ipvsadm -a on an owned service: the extra real server is removed",
		drift:   func(k *ipvstest.Kernel) { k.NewDestination(webKey, dr("198.51.100.66:80", 1)) },
		repairs: []string{"delete destination 198.51.100.66:80 from TCP 192.0.2.50:80"},
		reason:  "real server added outside directord",
	}, {
		name: "ipvsadm -E -s rr: the scheduler is set back in place",
		drift: func(k *ipvstest.Kernel) {
			s := wlc(webKey)
			s.Scheduler = "rr"
			k.UpdateService(s)
		},
		repairs: []string{"edit service TCP 192.0.2.50:80: scheduler rr -> wlc"},
		reason:  "settings changed outside directord",
	}} {
		t.Run(tc.name, func(t *testing.T) {
			k := ipvstest.New()
			m, log := newManager(t, k, t.TempDir())
			mustApply(t, m, desired(t, twoServices))
			tc.drift(k)
			res, err := m.Resync()
			if err != nil {
				t.Fatalf("Resync: %v", err)
			}
			if diff := cmp.Diff(tc.repairs, opStrings(res.Applied)); diff != "" {
				t.Errorf("repairs (-want +got):\n%s", diff)
			}
			checkTable(t, k, installed())
			if got := m.Counters().Repairs; got != uint64(len(tc.repairs)) {
				t.Errorf("Repairs counter = %d, want %d", got, len(tc.repairs))
			}
			if !strings.Contains(log.String(), tc.reason) {
				t.Errorf("log does not give the reason %q:\n%s", tc.reason, log)
			}
			// Repaired: the next resync finds nothing.
			if res, _ := m.Resync(); len(res.Applied) != 0 {
				t.Errorf("second Resync did %v", opStrings(res.Applied))
			}
		})
	}
}

func TestManagerLeavesHandMadeServiceAlone(t *testing.T) {
	k := ipvstest.New()
	k.Add(handMade())
	m, _ := newManager(t, k, t.TempDir())
	mustApply(t, m, desired(t, twoServices))
	mustApply(t, m, desired(t, webOnly)) // a reload that deletes an owned service
	if _, err := m.Resync(); err != nil {
		t.Fatal(err)
	}
	want := installed()[:1]
	want = append(want, handMade())
	checkTable(t, k, want)
	for _, c := range k.Calls() {
		if c.Key == handKey {
			t.Errorf("the hand-made service was touched: %v", c)
		}
	}
	if slices.Contains(m.Owned(), handKey) {
		t.Errorf("the hand-made service is owned: %v", m.Owned())
	}
}

func TestManagerAdoptsServiceWithConfiguredKey(t *testing.T) {
	k := ipvstest.New()
	// Someone ran ipvsadm -A -t 192.0.2.50:80 -s rr; ipvsadm -a ... -w 5
	// before directord started.
	byHand := wlc(webKey)
	byHand.Scheduler = "rr"
	k.Add(kentry(byHand, dr("198.51.100.11:80", 5), dr("198.51.100.77:80", 1)))
	m, log := newManager(t, k, t.TempDir())
	res := mustApply(t, m, desired(t, webOnly))
	if diff := cmp.Diff([]ipvs.ServiceKey{webKey}, res.Adopted, addrEq); diff != "" {
		t.Errorf("adopted (-want +got):\n%s", diff)
	}
	want := []string{
		"edit service TCP 192.0.2.50:80: scheduler rr -> wlc",
		"add destination 198.51.100.12:80 to TCP 192.0.2.50:80 (Route, weight 1)",
		"add destination 198.51.100.13:80 to TCP 192.0.2.50:80 (Route, weight 1)",
		"edit destination 198.51.100.11:80 of TCP 192.0.2.50:80: weight 5 -> 1",
		"delete destination 198.51.100.77:80 from TCP 192.0.2.50:80",
	}
	if diff := cmp.Diff(want, opStrings(res.Applied)); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}
	checkTable(t, k, installed()[:1])
	if !strings.Contains(log.String(), "adopted IPVS service created outside directord") {
		t.Errorf("adoption not logged:\n%s", log)
	}
	// Owned now: removing it from the file removes it from the kernel.
	res = mustApply(t, m, ipvs.Table{})
	if diff := cmp.Diff([]string{"delete service TCP 192.0.2.50:80"}, opStrings(res.Applied)); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}
}

func TestManagerKernelErrorMidApply(t *testing.T) {
	k := ipvstest.New()
	m, log := newManager(t, k, t.TempDir())
	k.FailOnce(ipvstest.Call{Method: "NewDestination", Key: webKey, Dest: dk("198.51.100.12:80")}, syscall.EIO)

	res, err := m.Apply(desired(t, twoServices))
	if !errors.Is(err, syscall.EIO) {
		t.Fatalf("Apply error = %v, want the kernel's EIO", err)
	}
	const failed = "add destination 198.51.100.12:80 to TCP 192.0.2.50:80 (Route, weight 1): input/output error"
	if len(res.Failed) != 1 || res.Failed[0].Error() != failed {
		t.Fatalf("failed = %v, want one: %s", res.Failed, failed)
	}
	if !strings.Contains(err.Error(), failed) {
		t.Errorf("error %q does not name the operation", err)
	}
	if len(res.Applied) != 5 {
		t.Errorf("applied %d operations, want the 5 others: %v", len(res.Applied), opStrings(res.Applied))
	}
	want := installed()
	want[0].Destinations = slices.Delete(want[0].Destinations, 1, 2)
	checkTable(t, k, want)
	if c := m.Counters(); c.OpErrors != 1 || c.OpsApplied != 5 {
		t.Errorf("counters = %+v, want 5 applied, 1 error", c)
	}

	// The next resync retries it, and does not call it drift.
	res, err = m.Resync()
	if err != nil {
		t.Fatalf("retry: %v", err)
	}
	if diff := cmp.Diff([]string{"add destination 198.51.100.12:80 to TCP 192.0.2.50:80 (Route, weight 1)"}, opStrings(res.Applied)); diff != "" {
		t.Errorf("retry applied (-want +got):\n%s", diff)
	}
	checkTable(t, k, installed())
	if m.Counters().Repairs != 0 || !strings.Contains(log.String(), "applied on retry") {
		t.Errorf("a retry was reported as drift (repairs %d):\n%s", m.Counters().Repairs, log)
	}
}

func TestManagerServiceCreationFails(t *testing.T) {
	k := ipvstest.New()
	dir := t.TempDir()
	m, _ := newManager(t, k, dir)
	k.FailOnce(ipvstest.Call{Method: "NewService", Key: webKey}, syscall.ENOMEM)
	res, err := m.Apply(desired(t, twoServices))
	if !errors.Is(err, syscall.ENOMEM) {
		t.Fatalf("Apply error = %v, want ENOMEM", err)
	}
	// Its real servers are not tried (they would fail with ESRCH); the
	// other service is installed; the failed one is not owned.
	if len(res.Failed) != 1 || len(res.Skipped) != 3 || len(res.Applied) != 2 {
		t.Errorf("applied %v, failed %v, skipped %v", opStrings(res.Applied), res.Failed, opStrings(res.Skipped))
	}
	if diff := cmp.Diff([]ipvs.ServiceKey{apiKey}, m.Owned(), addrEq); diff != "" {
		t.Errorf("owned (-want +got):\n%s", diff)
	}
	m2, _ := newManager(t, k, dir)
	if diff := cmp.Diff([]ipvs.ServiceKey{apiKey}, m2.Owned(), addrEq); diff != "" {
		t.Errorf("state file lists (-want +got):\n%s", diff)
	}
	res = mustApply(t, m, desired(t, twoServices))
	if len(res.Applied) != 4 {
		t.Errorf("retry applied %v, want the service and its 3 real servers", opStrings(res.Applied))
	}
	checkTable(t, k, installed())
}

func TestManagerReadFailure(t *testing.T) {
	k := ipvstest.New()
	m, _ := newManager(t, k, t.TempDir())
	k.FailOnce(ipvstest.Call{Method: "Services"}, syscall.EPERM)
	if _, err := m.Apply(desired(t, twoServices)); !errors.Is(err, syscall.EPERM) {
		t.Fatalf("Apply error = %v, want EPERM", err)
	}
	if diff := cmp.Diff([]ipvstest.Call{{Method: "Services"}}, k.Calls(), addrEq); diff != "" {
		t.Errorf("after a failed read, kernel calls (-want +got):\n%s", diff)
	}
	// Resync still knows the table it should hold.
	if res, err := m.Resync(); err != nil || len(res.Applied) != 6 {
		t.Errorf("Resync after a failed Apply: %v, %v", opStrings(res.Applied), err)
	}
}

func TestManagerStateSurvivesRestart(t *testing.T) {
	k := ipvstest.New()
	k.Add(handMade())
	dir := t.TempDir()
	m, _ := newManager(t, k, dir)
	mustApply(t, m, desired(t, twoServices))

	// directord restarts (or crashed) and comes back with api removed from
	// the file.
	m2, log := newManager(t, k, dir)
	if diff := cmp.Diff([]ipvs.ServiceKey{webKey, apiKey}, m2.Owned(), addrEq); diff != "" {
		t.Fatalf("owned after restart (-want +got):\n%s", diff)
	}
	res, err := m2.RemoveStale(desired(t, webOnly))
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"delete service TCP 192.0.2.50:8080"}, opStrings(res.Applied)); diff != "" {
		t.Errorf("RemoveStale (-want +got):\n%s", diff)
	}
	if !strings.Contains(log.String(), "left by an earlier run") {
		t.Errorf("stale removal not logged:\n%s", log)
	}
	checkTable(t, k, []ipvs.Entry{installed()[0], handMade()})
	m3, _ := newManager(t, k, dir)
	if diff := cmp.Diff([]ipvs.ServiceKey{webKey}, m3.Owned(), addrEq); diff != "" {
		t.Errorf("owned after RemoveStale and restart (-want +got):\n%s", diff)
	}
}

func TestManagerRemoveStaleTouchesNothingElse(t *testing.T) {
	k := ipvstest.New()
	dir := t.TempDir()
	m, _ := newManager(t, k, dir)
	mustApply(t, m, desired(t, twoServices))
	k.Flush() // and the web service lost a real server's worth of state
	k.Add(kentry(wlc(webKey), dr("198.51.100.11:80", 9)))
	m2, _ := newManager(t, k, dir)
	res, err := m2.RemoveStale(desired(t, webOnly))
	if err != nil || len(res.Applied) != 0 {
		t.Fatalf("RemoveStale did %v, %v; want nothing (api is gone already, web is configured)", opStrings(res.Applied), err)
	}
	// api, owned but neither configured nor installed, is forgotten.
	if diff := cmp.Diff([]ipvs.ServiceKey{webKey}, m2.Owned(), addrEq); diff != "" {
		t.Errorf("owned (-want +got):\n%s", diff)
	}
	checkTable(t, k, []ipvs.Entry{kentry(wlc(webKey), dr("198.51.100.11:80", 9))})
}

func TestManagerTimeouts(t *testing.T) {
	k := ipvstest.New()
	m, _ := newManager(t, k, t.TempDir())
	d := desired(t, "ipvs:\n  timeouts: {tcp: 900s, udp: 60s}\n")
	res := mustApply(t, m, d)
	if diff := cmp.Diff([]string{"set timeouts: udp 300s -> 60s"}, opStrings(res.Applied)); diff != "" {
		t.Errorf("applied (-want +got):\n%s", diff)
	}
	want := ipvs.Timeouts{TCP: 900 * time.Second, TCPFin: 120 * time.Second, UDP: time.Minute}
	if got, _ := k.Timeouts(); got != want {
		t.Errorf("kernel timeouts = %+v, want %+v", got, want)
	}
	if res := mustApply(t, m, d); len(res.Applied) != 0 {
		t.Errorf("second Apply did %v", opStrings(res.Applied))
	}
	k.SetTimeouts(ipvs.Timeouts{UDP: 300 * time.Second}) // ipvsadm --set 0 0 300
	if res, _ := m.Resync(); len(res.Applied) != 1 {
		t.Errorf("Resync did %v, want the udp timeout set back", opStrings(res.Applied))
	}
}

func TestManagerResyncBeforeApply(t *testing.T) {
	k := ipvstest.New()
	m, _ := newManager(t, k, t.TempDir())
	if res, err := m.Resync(); err != nil || len(res.Applied) != 0 {
		t.Errorf("Resync before Apply: %v, %v", opStrings(res.Applied), err)
	}
	if len(k.Calls()) != 0 {
		t.Errorf("Resync before Apply called the kernel: %v", k.Calls())
	}
}

func TestManagerStateFile(t *testing.T) {
	dir := t.TempDir()
	k := ipvstest.New()
	m, _ := newManager(t, k, dir)
	mark := ipvs.ServiceKey{FWMark: 7, IPv6: true}
	mustApply(t, m, ipvs.Table{Services: []ipvs.DesiredService{
		{Name: "web6", Service: wlc(tcp("[2001:db8::50]:443"))},
		{Name: "mark", Service: wlc(mark)},
	}})
	b, err := os.ReadFile(filepath.Join(dir, "ipvs.json"))
	if err != nil {
		t.Fatal(err)
	}
	const want = `{
  "services": [
    {
      "protocol": "tcp",
      "address": "2001:db8::50",
      "port": 443,
      "family": "ipv6"
    },
    {
      "fwmark": 7,
      "family": "ipv6"
    }
  ]
}
`
	if diff := cmp.Diff(want, string(b)); diff != "" {
		t.Errorf("ipvs.json (-want +got):\n%s", diff)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("state dir holds %d entries, want only ipvs.json", len(ents))
	}

	if err := os.WriteFile(filepath.Join(dir, "ipvs.json"), []byte("{not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A corrupt state file must not keep the director down: it is kept for
	// a post-mortem and the manager starts owning nothing.
	m2, log := newManager(t, k, dir)
	if got := m2.Owned(); len(got) != 0 {
		t.Errorf("owned from a corrupt state file: %v", got)
	}
	if !strings.Contains(log.String(), "cannot read IPVS state") {
		t.Errorf("corrupt state file not logged:\n%s", log)
	}
	if _, err := os.Stat(filepath.Join(dir, "ipvs.json.corrupt")); err != nil {
		t.Errorf("corrupt state file not kept: %v", err)
	}
}

// A targeted Apply must not lose track of the services it did not read:
// after a change to one service, a removed service and the untouched ones
// are still handled right, and a resync finds nothing to repair.
func TestManagerTargetedApplyKeepsOwnership(t *testing.T) {
	k := ipvstest.New()
	m, _ := newManager(t, k, t.TempDir())
	mustApply(t, m, desired(t, twoServices))
	owned := len(m.Owned())
	more := strings.Replace(twoServices, "        - {address: 198.51.100.13}\n",
		"        - {address: 198.51.100.13}\n        - {address: 198.51.100.14}\n", 1)
	mustApply(t, m, desired(t, more))
	if got := len(m.Owned()); got != owned {
		t.Errorf("owned services %d after a one-service change, want %d", got, owned)
	}
	res, err := m.Resync()
	if err != nil || len(res.Applied) != 0 {
		t.Errorf("resync after a targeted apply: %v %v", err, opStrings(res.Applied))
	}
	// Removing a whole service is a targeted Apply too.
	d := desired(t, more)
	d.Services = d.Services[:1]
	res = mustApply(t, m, d)
	if len(res.Applied) != 1 || res.Applied[0].Kind != ipvs.DelService {
		t.Errorf("removing a service applied %v, want one DelService", opStrings(res.Applied))
	}
	if got := len(m.Owned()); got != owned-1 {
		t.Errorf("owned services %d after removing one, want %d", got, owned-1)
	}
}
