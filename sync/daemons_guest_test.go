//go:build vmguest

package sync

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/directord/directord/internal/netlab"
	"github.com/directord/directord/ipvs"
	"github.com/google/go-cmp/cmp"
)

// openKernel opens the IPVS netlink handle of h's namespace.
func openKernel(t *testing.T, h *netlab.Host) *ipvs.NetlinkKernel {
	t.Helper()
	var k *ipvs.NetlinkKernel
	if err := h.Do(func() (err error) { k, err = ipvs.NewKernel(); return err }); err != nil {
		t.Fatalf("%s: NewKernel: %v", h, err)
	}
	t.Cleanup(func() { k.Close() })
	return k
}

func run(t *testing.T, h *netlab.Host, argv ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := h.Run(ctx, argv...)
	if err != nil {
		t.Fatalf("%s: %s: %v\n%s", h, strings.Join(argv, " "), err, out)
	}
	return string(out)
}

// The kernel's daemons as NEW/DEL/GET_DAEMON see them, checked against
// ipvsadm: both start with our settings and list them back, a role switch
// leaves one, Stop leaves none, and a daemon started by ipvsadm is
// reported and survives directord.
func TestGuestDaemonControl(t *testing.T) {
	lab := netlab.New(t)
	h := lab.AddHost("lb", "192.0.2.11/24")
	k := openKernel(t, h)
	base := ipvs.DaemonConfig{Interface: "eth0", SyncID: 51, MaxLen: 1200, Group: netip.MustParseAddr("239.1.2.3"), Port: 8850, TTL: 3}
	d := NewDaemons(k, base, t.TempDir(), nil)
	if err := d.Set(RoleBoth); err != nil {
		t.Fatalf("Set(both): %v", err)
	}
	got, err := k.Daemons()
	if err != nil {
		t.Fatal(err)
	}
	master, backup := base, base
	master.State, backup.State = ipvs.DaemonMaster, ipvs.DaemonBackup
	if diff := cmp.Diff([]ipvs.DaemonConfig{master, backup}, got, cmp.Comparer(func(a, b netip.Addr) bool { return a == b })); diff != "" {
		t.Errorf("GET_DAEMON (-want +got):\n%s", diff)
	}
	out := run(t, h, "ipvsadm", "-L", "--daemon")
	for _, want := range []string{"master sync daemon (mcast=eth0, syncid=51", "backup sync daemon (mcast=eth0, syncid=51"} {
		if !strings.Contains(out, want) {
			t.Errorf("ipvsadm -L --daemon lacks %q:\n%s", want, out)
		}
	}

	if err := d.Set(RoleBackup); err != nil {
		t.Fatalf("Set(backup): %v", err)
	}
	if out := run(t, h, "ipvsadm", "-L", "--daemon"); strings.Contains(out, "master") || !strings.Contains(out, "backup") {
		t.Errorf("after the switch to backup, ipvsadm -L --daemon:\n%s", out)
	}
	if err := d.Set(RoleMaster); err != nil {
		t.Fatalf("Set(master): %v", err)
	}
	if out := run(t, h, "ipvsadm", "-L", "--daemon"); !strings.Contains(out, "master") || strings.Contains(out, "backup") {
		t.Errorf("after the switch to master, ipvsadm -L --daemon:\n%s", out)
	}
	if err := d.Stop(); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if got, err := k.Daemons(); err != nil || len(got) != 0 {
		t.Errorf("after Stop the kernel lists %v (%v), want none", got, err)
	}

	// A daemon somebody else started.
	run(t, h, "ipvsadm", "--start-daemon", "backup", "--mcast-interface", "eth0", "--syncid", "9")
	d = NewDaemons(k, base, t.TempDir(), nil)
	if err := d.Set(RoleMaster); err != nil {
		t.Fatalf("Set(master) next to a foreign backup: %v", err)
	}
	st := d.Status()
	if len(st.Foreign) != 1 || st.Foreign[0].State != ipvs.DaemonBackup || st.Foreign[0].SyncID != 9 {
		t.Errorf("foreign daemons %+v, want ipvsadm's backup with sync id 9", st.Foreign)
	}
	if err := d.Stop(); err != nil {
		t.Fatal(err)
	}
	if out := run(t, h, "ipvsadm", "-L", "--daemon"); !strings.Contains(out, "backup sync daemon (mcast=eth0, syncid=9") || strings.Contains(out, "master") {
		t.Errorf("after Stop, ipvsadm -L --daemon:\n%s", out)
	}
	if err := k.NewDaemon(ipvs.DaemonConfig{State: ipvs.DaemonBackup, Interface: "eth0"}); err == nil || !strings.Contains(err.Error(), "already runs") {
		t.Errorf("a second backup daemon: %v, want EEXIST explained", err)
	}
	run(t, h, "ipvsadm", "--stop-daemon", "backup")
}
