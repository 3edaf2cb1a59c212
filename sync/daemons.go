package sync

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"time"

	"github.com/directord/directord/ipvs"
)

// Kernel starts, stops and lists the kernel's sync daemons of one network
// namespace; *ipvs.NetlinkKernel implements it.
type Kernel interface {
	Daemons() ([]ipvs.DaemonConfig, error)
	NewDaemon(ipvs.DaemonConfig) error
	DelDaemon(ipvs.DaemonState) error
}

// Role says which kernel daemons run.
type Role int

// The roles. RoleBoth is the choice without a followed VRRP instance: the
// master daemon sends whatever this director forwards and the backup daemon
// takes in what the peer sends.
const (
	RoleBoth Role = iota
	RoleMaster
	RoleBackup
)

func (r Role) String() string {
	switch r {
	case RoleBoth:
		return "both"
	case RoleMaster:
		return "master"
	case RoleBackup:
		return "backup"
	}
	return fmt.Sprintf("role(%d)", int(r))
}

// states lists the daemon states a role runs, the one to start first
// first.
func (r Role) states() []ipvs.DaemonState {
	switch r {
	case RoleMaster:
		return []ipvs.DaemonState{ipvs.DaemonMaster}
	case RoleBackup:
		return []ipvs.DaemonState{ipvs.DaemonBackup}
	}
	return []ipvs.DaemonState{ipvs.DaemonMaster, ipvs.DaemonBackup}
}

// stateFile lists, in the state directory, the daemons directord started,
// so that after a crash a restarted directord recognises them as its own
// rather than as someone else's.
const stateFile = "sync-daemons.json"

// Daemons keeps the kernel's sync daemons in the configured role. It is
// not safe for concurrent use: the daemon's loop owns it.
type Daemons struct {
	k        Kernel
	log      *slog.Logger
	base     ipvs.DaemonConfig // State unset
	stateDir string
	role     Role
	// owned are the daemons directord started (this run or an earlier
	// one), by state.
	owned map[ipvs.DaemonState]ipvs.DaemonConfig
	// foreign are running daemons directord did not start, as last seen.
	foreign map[ipvs.DaemonState]ipvs.DaemonConfig
	// switches counts role changes applied.
	switches uint64
	// started is when directord started each daemon in this run.
	started map[ipvs.DaemonState]time.Time
	now     func() time.Time
	sleep   func(time.Duration)
}

// minDaemonAge is how old a daemon must be before it is stopped. Debian's
// 6.1 kernel takes 10 s or more to answer DEL_DAEMON for a master daemon
// stopped within milliseconds of its start (measured in the VM: 3 of 6
// immediate stops, none after 300 ms); a role flapping that fast waits
// this long instead.
const minDaemonAge = 300 * time.Millisecond

// NewDaemons prepares the control of the daemons described by base (its
// State is ignored). It changes nothing until Set.
func NewDaemons(k Kernel, base ipvs.DaemonConfig, stateDir string, log *slog.Logger) *Daemons {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	d := &Daemons{k: k, log: log, base: base, stateDir: stateDir, role: -1,
		owned: map[ipvs.DaemonState]ipvs.DaemonConfig{}, foreign: map[ipvs.DaemonState]ipvs.DaemonConfig{},
		started: map[ipvs.DaemonState]time.Time{}, now: time.Now, sleep: time.Sleep}
	d.loadState()
	return d
}

func (d *Daemons) config(s ipvs.DaemonState) ipvs.DaemonConfig {
	c := d.base
	c.State = s
	return c
}

// same reports whether a running daemon is the one c describes. A zero
// field of c is the kernel's default, which the kernel reports filled in.
func same(running, c ipvs.DaemonConfig) bool {
	if c.MaxLen == 0 {
		running.MaxLen = 0
	}
	if !c.Group.IsValid() {
		running.Group = c.Group
	}
	if c.Port == 0 {
		running.Port = 0
	}
	if c.TTL == 0 {
		running.TTL = 0
	}
	return running == c
}

// Set runs the daemons of role r and stops the other one if directord
// started it. On a change of role the new daemon starts before the old one
// stops, so a director is never without a sync daemon. A daemon of the
// wanted state that directord did not start is left running and reported.
func (d *Daemons) Set(r Role) error {
	running, err := d.running()
	if err != nil {
		return err
	}
	var errs []error
	want := r.states()
	for _, s := range want {
		c := d.config(s)
		cur, ok := running[s]
		switch {
		case ok && d.isOwned(cur):
			if same(cur, c) {
				continue
			}
			// Our own daemon with old settings (a reload): restart it.
			if err := d.stop(s); err != nil {
				errs = append(errs, err)
				continue
			}
		case ok:
			continue // foreign, reported by running
		}
		if err := d.k.NewDaemon(c); err != nil {
			errs = append(errs, err)
			continue
		}
		d.owned[s] = c
		d.started[s] = d.now()
		d.log.Info("sync daemon started", "state", s.String(), "interface", c.Interface, "sync_id", c.SyncID)
	}
	for _, s := range []ipvs.DaemonState{ipvs.DaemonMaster, ipvs.DaemonBackup} {
		if slices.Contains(want, s) {
			continue
		}
		if cur, ok := running[s]; ok && d.isOwned(cur) {
			if err := d.stop(s); err != nil {
				errs = append(errs, err)
			}
		}
	}
	if r != d.role {
		if d.role >= 0 {
			d.switches++
		}
		d.role = r
	}
	errs = append(errs, d.saveState())
	return errors.Join(errs...)
}

// Stop stops the daemons directord started and leaves any other.
func (d *Daemons) Stop() error {
	running, err := d.running()
	if err != nil {
		return err
	}
	var errs []error
	for _, s := range []ipvs.DaemonState{ipvs.DaemonBackup, ipvs.DaemonMaster} {
		if cur, ok := running[s]; ok && d.isOwned(cur) {
			errs = append(errs, d.stop(s))
		}
	}
	d.role = -1
	errs = append(errs, d.saveState())
	return errors.Join(errs...)
}

func (d *Daemons) stop(s ipvs.DaemonState) error {
	if at, ok := d.started[s]; ok {
		if age := d.now().Sub(at); age < minDaemonAge {
			d.sleep(minDaemonAge - age)
		}
	}
	err := d.k.DelDaemon(s)
	if err != nil && !errors.Is(err, syscall.ESRCH) {
		return err
	}
	delete(d.owned, s)
	delete(d.started, s)
	d.log.Info("sync daemon stopped", "state", s.String())
	return nil
}

func (d *Daemons) isOwned(running ipvs.DaemonConfig) bool {
	c, ok := d.owned[running.State]
	return ok && same(running, c)
}

// running lists the kernel's daemons by state, forgets owned daemons that
// no longer run and reports foreign ones when they appear or change.
func (d *Daemons) running() (map[ipvs.DaemonState]ipvs.DaemonConfig, error) {
	list, err := d.k.Daemons()
	if err != nil {
		return nil, err
	}
	m := map[ipvs.DaemonState]ipvs.DaemonConfig{}
	for _, c := range list {
		m[c.State] = c
	}
	for s := range d.owned {
		if _, ok := m[s]; !ok {
			d.log.Warn("a sync daemon directord started no longer runs", "state", s.String())
			delete(d.owned, s)
		}
	}
	for s, c := range m {
		if d.isOwned(c) {
			delete(d.foreign, s)
			continue
		}
		if old, ok := d.foreign[s]; !ok || old != c {
			d.log.Warn("a sync daemon directord did not start runs; leaving it alone", "state", s.String(), "daemon", c.String())
		}
		d.foreign[s] = c
	}
	for s := range d.foreign {
		if _, ok := m[s]; !ok {
			delete(d.foreign, s)
		}
	}
	return m, nil
}

// DaemonsStatus is what runs, as last seen.
type DaemonsStatus struct {
	Role Role
	// Owned are the daemons directord started; Foreign those it found
	// running and did not start.
	Owned, Foreign []ipvs.DaemonConfig
	// Switches counts role changes.
	Switches uint64
}

// Status reports the daemons as of the last Set or Stop.
func (d *Daemons) Status() DaemonsStatus {
	st := DaemonsStatus{Role: d.role, Switches: d.switches}
	for _, s := range []ipvs.DaemonState{ipvs.DaemonMaster, ipvs.DaemonBackup} {
		if c, ok := d.owned[s]; ok {
			st.Owned = append(st.Owned, c)
		}
		if c, ok := d.foreign[s]; ok {
			st.Foreign = append(st.Foreign, c)
		}
	}
	return st
}

// stateDoc is the state file's content.
type stateDoc struct {
	Daemons []ipvs.DaemonConfig `json:"daemons"`
}

func (d *Daemons) loadState() {
	if d.stateDir == "" {
		return
	}
	b, err := os.ReadFile(filepath.Join(d.stateDir, stateFile))
	if err != nil {
		if !errors.Is(err, os.ErrNotExist) {
			d.log.Warn("cannot read the sync daemons of an earlier run", "error", err)
		}
		return
	}
	var doc stateDoc
	if err := json.Unmarshal(b, &doc); err != nil {
		d.log.Warn("ignoring a corrupt sync state file", "file", filepath.Join(d.stateDir, stateFile), "error", err)
		return
	}
	for _, c := range doc.Daemons {
		d.owned[c.State] = c
	}
}

func (d *Daemons) saveState() error {
	if d.stateDir == "" {
		return nil
	}
	var doc stateDoc
	for _, s := range []ipvs.DaemonState{ipvs.DaemonMaster, ipvs.DaemonBackup} {
		if c, ok := d.owned[s]; ok {
			doc.Daemons = append(doc.Daemons, c)
		}
	}
	b, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(d.stateDir, 0o755); err != nil {
		return fmt.Errorf("write sync state: %w", err)
	}
	tmp, err := os.CreateTemp(d.stateDir, stateFile+".*")
	if err != nil {
		return fmt.Errorf("write sync state: %w", err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("write sync state: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("write sync state: %w", err)
	}
	if err := os.Rename(tmp.Name(), filepath.Join(d.stateDir, stateFile)); err != nil {
		return fmt.Errorf("write sync state: %w", err)
	}
	return nil
}
