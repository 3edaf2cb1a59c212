package daemon

import (
	"errors"
	"reflect"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/ipvs"
	connsync "github.com/directord/directord/sync"
	"github.com/directord/directord/vrrp"
)

// syncRun is the running connection sync: the kernel daemons (and the
// relay) for the configuration's sync section.
type syncRun struct {
	m      *connsync.Manager
	cfg    config.Sync
	kernel ipvs.Kernel // opened for sync alone, closed with it; else nil
	// master is the followed instance's last known state.
	master bool
}

// startSync starts the kernel sync daemons when the configuration has a
// sync section: the backup daemon until the followed instance becomes
// MASTER, or both without follow. Only a kernel without IPVS is fatal; a
// daemon the kernel refuses is logged and tried again at the next VRRP
// transition or reload.
func (d *Daemon) startSync() error { return d.startSyncAs(false) }

// startSyncAs starts sync with the followed instance's state known
// (master), which a reload carries over.
func (d *Daemon) startSyncAs(master bool) error {
	if d.cfg.Sync == nil {
		return nil
	}
	k, own := d.ipvsKernel, ipvs.Kernel(nil)
	if k == nil {
		nk, err := ipvs.NewKernel()
		if err != nil {
			return err
		}
		k, own = nk, nk
	}
	sk, ok := k.(connsync.Kernel)
	if !ok {
		if own != nil {
			own.Close()
		}
		return errNoDaemonControl
	}
	cfg := connsync.ConfigFrom(d.cfg.Sync, d.cfg.Node.StateDir)
	cfg.Log = d.log.With("component", "sync")
	s := &syncRun{m: connsync.NewManager(sk, cfg), cfg: *d.cfg.Sync, kernel: own, master: master}
	d.syncRun = s
	if err := s.m.Start(master); err != nil {
		d.log.Error("connection sync not fully started; retrying at the next VRRP transition", "error", err)
	}
	return nil
}

var errNoDaemonControl = errors.New("connection sync: this IPVS backend cannot control the kernel's sync daemons")

// syncTransition switches the daemons when the followed instance enters or
// leaves MASTER; any transition also retries a daemon that failed.
func (d *Daemon) syncTransition(tr vrrp.Transition) {
	s := d.syncRun
	if s == nil {
		return
	}
	var err error
	if tr.Instance == s.cfg.Follow {
		s.master = tr.To == vrrp.StateMaster
		err = s.m.SetMaster(s.master)
		if tr.To == vrrp.StateBackup && s.cfg.ResyncOnBackup {
			s.m.EnteredBackup()
		}
	} else {
		err = s.m.Retry()
	}
	if err != nil {
		d.log.Error("connection sync daemons not as wanted; retrying at the next VRRP transition", "instance", tr.Instance, "to", tr.To.String(), "error", err)
	}
}

// reloadSync applies a changed sync section. The new settings take over
// the daemons directord started (found through the state file): a daemon
// whose settings changed restarts (stop, then start), an unchanged one
// keeps running, and the role stays what the followed instance's state
// says. Without a sync section any more, the daemons stop.
func (d *Daemon) reloadSync(old *config.Config) {
	if reflect.DeepEqual(old.Sync, d.cfg.Sync) {
		return
	}
	if d.cfg.Sync == nil {
		if err := d.stopSync(); err != nil {
			d.log.Error("stopping connection sync", "error", err)
		}
		d.log.Info("connection sync disabled")
		return
	}
	master := false
	if s := d.syncRun; s != nil {
		master = s.master && s.cfg.Follow == d.cfg.Sync.Follow
		s.m.Close()
		if s.kernel != nil {
			s.kernel.Close()
		}
		d.syncRun = nil
	}
	if err := d.startSyncAs(master); err != nil {
		d.log.Error("connection sync not started", "error", err)
	}
}

// stopSync stops the daemons directord started; any other is left alone.
func (d *Daemon) stopSync() error {
	s := d.syncRun
	if s == nil {
		return nil
	}
	d.syncRun = nil
	err := s.m.Stop()
	if s.kernel != nil {
		s.kernel.Close()
	}
	return err
}
