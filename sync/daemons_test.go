package sync

import (
	"fmt"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/directord/directord/ipvs"
	"github.com/google/go-cmp/cmp"
)

// fakeKernel behaves like the kernel's daemon commands: one daemon per
// state, EEXIST and ESRCH, and it fills in the defaults. It records every
// command and checks after each that some daemon runs once one has run.
type fakeKernel struct {
	t       *testing.T
	running map[ipvs.DaemonState]ipvs.DaemonConfig
	ops     []string
	started bool
	gap     bool // a moment with no daemon after the first start
}

func newFakeKernel(t *testing.T) *fakeKernel {
	return &fakeKernel{t: t, running: map[ipvs.DaemonState]ipvs.DaemonConfig{}}
}

func (f *fakeKernel) Daemons() ([]ipvs.DaemonConfig, error) {
	var out []ipvs.DaemonConfig
	for _, s := range []ipvs.DaemonState{ipvs.DaemonMaster, ipvs.DaemonBackup} {
		if c, ok := f.running[s]; ok {
			out = append(out, c)
		}
	}
	return out, nil
}

func (f *fakeKernel) NewDaemon(c ipvs.DaemonConfig) error {
	f.ops = append(f.ops, "new "+c.State.String())
	if _, ok := f.running[c.State]; ok {
		return syscall.EEXIST
	}
	if !c.Group.IsValid() {
		c.Group = netip.MustParseAddr("224.0.0.81")
	}
	if c.Port == 0 {
		c.Port = 8848
	}
	if c.TTL == 0 {
		c.TTL = 1
	}
	if c.MaxLen == 0 {
		c.MaxLen = 1472
	}
	f.running[c.State] = c
	f.started = true
	return nil
}

func (f *fakeKernel) DelDaemon(s ipvs.DaemonState) error {
	f.ops = append(f.ops, "del "+s.String())
	if _, ok := f.running[s]; !ok {
		return syscall.ESRCH
	}
	delete(f.running, s)
	if f.started && len(f.running) == 0 {
		f.gap = true
	}
	return nil
}

func (f *fakeKernel) states() string {
	var s []string
	for _, st := range []ipvs.DaemonState{ipvs.DaemonMaster, ipvs.DaemonBackup} {
		if _, ok := f.running[st]; ok {
			s = append(s, st.String())
		}
	}
	return strings.Join(s, "+")
}

var testBase = ipvs.DaemonConfig{Interface: "eth1", SyncID: 51}

// With follow, the daemons switch on every transition, the new one first:
// there is never a moment without a sync daemon.
func TestDaemonsFollowSwitchesWithoutAGap(t *testing.T) {
	k := newFakeKernel(t)
	d := NewDaemons(k, testBase, t.TempDir(), nil)
	steps := []struct {
		role Role
		want string
		ops  []string
	}{
		{RoleBackup, "backup", []string{"new backup"}},
		{RoleMaster, "master", []string{"new master", "del backup"}},
		{RoleMaster, "master", nil},
		{RoleBackup, "backup", []string{"new backup", "del master"}},
		{RoleBoth, "master+backup", []string{"new master"}},
		{RoleBackup, "backup", []string{"del master"}},
	}
	for i, s := range steps {
		k.ops = nil
		if err := d.Set(s.role); err != nil {
			t.Fatalf("step %d: Set(%v): %v", i, s.role, err)
		}
		if got := k.states(); got != s.want {
			t.Errorf("step %d: after Set(%v) running %q, want %q", i, s.role, got, s.want)
		}
		if diff := cmp.Diff(s.ops, k.ops); diff != "" {
			t.Errorf("step %d: Set(%v) commands (-want +got):\n%s", i, s.role, diff)
		}
	}
	if k.gap {
		t.Error("a role switch left the director without any sync daemon")
	}
	if st := d.Status(); st.Switches != 4 || st.Role != RoleBackup {
		t.Errorf("status %+v, want role backup after 4 switches", st)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if len(k.running) != 0 {
		t.Errorf("Stop left %v running", k.states())
	}
}

// A daemon someone else started (ipvsadm --start-daemon) is reported, never
// stopped, and never restarted with our settings.
func TestDaemonsLeaveAForeignDaemonAlone(t *testing.T) {
	k := newFakeKernel(t)
	k.running[ipvs.DaemonBackup] = ipvs.DaemonConfig{State: ipvs.DaemonBackup, Interface: "eth0", SyncID: 7, Group: netip.MustParseAddr("224.0.0.81"), Port: 8848, TTL: 1, MaxLen: 1472}
	var logs strings.Builder
	d := NewDaemons(k, testBase, t.TempDir(), testLogger(&logs))
	if err := d.Set(RoleMaster); err != nil {
		t.Fatal(err)
	}
	if err := d.Set(RoleBackup); err != nil {
		t.Fatal(err)
	}
	st := d.Status()
	if len(st.Foreign) != 1 || st.Foreign[0].Interface != "eth0" || st.Foreign[0].SyncID != 7 {
		t.Errorf("foreign daemons %+v, want the backup on eth0 with sync id 7", st.Foreign)
	}
	if len(st.Owned) != 0 {
		t.Errorf("owned %+v, want none (the master was stopped, the backup is not ours)", st.Owned)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if c, ok := k.running[ipvs.DaemonBackup]; !ok || c.Interface != "eth0" {
		t.Errorf("the foreign backup daemon did not survive: %v", k.running)
	}
	if n := strings.Count(logs.String(), "did not start"); n != 1 {
		t.Errorf("the foreign daemon was reported %d times, want once:\n%s", n, logs.String())
	}
}

// After a crash a restarted directord finds the daemons it started in its
// state file and treats them as its own.
func TestDaemonsAdoptTheirOwnAfterARestart(t *testing.T) {
	k := newFakeKernel(t)
	dir := t.TempDir()
	if err := NewDaemons(k, testBase, dir, nil).Set(RoleMaster); err != nil {
		t.Fatal(err)
	}
	// The process dies without Stop; a new one starts as backup.
	d := NewDaemons(k, testBase, dir, nil)
	k.ops = nil
	if err := d.Set(RoleBackup); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"new backup", "del master"}, k.ops); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if st := d.Status(); len(st.Foreign) != 0 {
		t.Errorf("its own earlier daemon reported as foreign: %+v", st.Foreign)
	}
}

// A reload with other settings restarts directord's own daemon with them.
func TestDaemonsRestartOnChangedSettings(t *testing.T) {
	k := newFakeKernel(t)
	dir := t.TempDir()
	if err := NewDaemons(k, testBase, dir, nil).Set(RoleBackup); err != nil {
		t.Fatal(err)
	}
	changed := testBase
	changed.SyncID = 52
	d := NewDaemons(k, changed, dir, nil)
	k.ops = nil
	if err := d.Set(RoleBackup); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]string{"del backup", "new backup"}, k.ops); diff != "" {
		t.Errorf("commands (-want +got):\n%s", diff)
	}
	if got := k.running[ipvs.DaemonBackup].SyncID; got != 52 {
		t.Errorf("backup runs with sync id %d, want 52", got)
	}
}

// A refused start is an error that names the daemon, and the next Set
// tries again.
func TestDaemonsRetryAfterAFailedStart(t *testing.T) {
	k := &failingKernel{fakeKernel: newFakeKernel(t), fail: 1}
	d := NewDaemons(k, testBase, t.TempDir(), nil)
	err := d.Set(RoleMaster)
	if err == nil || !strings.Contains(err.Error(), "master") {
		t.Fatalf("Set = %v, want an error naming the master daemon", err)
	}
	if err := d.Set(RoleMaster); err != nil {
		t.Fatal(err)
	}
	if k.states() != "master" {
		t.Errorf("running %q, want master", k.states())
	}
}

type failingKernel struct {
	*fakeKernel
	fail int
}

func (f *failingKernel) NewDaemon(c ipvs.DaemonConfig) error {
	if f.fail > 0 {
		f.fail--
		return fmt.Errorf("start %v: %w", c, syscall.ENODEV)
	}
	return f.fakeKernel.NewDaemon(c)
}

// A daemon is never stopped younger than minDaemonAge: the kernel answers
// such a stop only after seconds.
func TestDaemonsLetAYoungDaemonSettleBeforeStopping(t *testing.T) {
	k := newFakeKernel(t)
	d := NewDaemons(k, testBase, t.TempDir(), nil)
	now := time.Unix(1000, 0)
	var slept []time.Duration
	d.now = func() time.Time { return now }
	d.sleep = func(dur time.Duration) { slept = append(slept, dur); now = now.Add(dur) }
	if err := d.Set(RoleMaster); err != nil {
		t.Fatal(err)
	}
	now = now.Add(100 * time.Millisecond)
	if err := d.Set(RoleBackup); err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff([]time.Duration{minDaemonAge - 100*time.Millisecond}, slept); diff != "" {
		t.Errorf("sleeps before stopping the young master (-want +got):\n%s", diff)
	}
	now = now.Add(time.Hour)
	slept = nil
	if err := d.Set(RoleMaster); err != nil {
		t.Fatal(err)
	}
	if len(slept) != 0 {
		t.Errorf("slept %v before stopping an old backup", slept)
	}
}
