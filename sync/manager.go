package sync

import (
	"errors"
	"log/slog"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/ipvs"
)

// Config is what the Manager runs, built from the configuration's sync
// section by ConfigFrom.
type Config struct {
	// Daemon holds the kernel daemons' settings; its State is ignored.
	Daemon ipvs.DaemonConfig
	// Follow is true when a VRRP instance picks the role (SetMaster);
	// without it both daemons run.
	Follow bool
	// StateDir keeps the list of daemons directord started.
	StateDir string
	Log      *slog.Logger
}

// ConfigFrom translates a validated sync section.
func ConfigFrom(s *config.Sync, stateDir string) Config {
	c := Config{
		Daemon: ipvs.DaemonConfig{
			Interface: s.Interface,
			SyncID:    uint8(s.SyncID),
			MaxLen:    uint16(s.MaxLen),
			Group:     s.Group,
			Port:      uint16(s.Port),
			TTL:       uint8(s.TTL),
		},
		Follow:   s.Follow != "",
		StateDir: stateDir,
	}
	return c
}

// Manager runs connection sync for one director: the kernel daemons in the
// role VRRP decides. The daemon's loop owns it; it is not safe for
// concurrent use.
type Manager struct {
	cfg     Config
	log     *slog.Logger
	daemons *Daemons
	master  bool
	started bool
}

// NewManager prepares sync over k. Nothing runs before Start.
func NewManager(k Kernel, cfg Config) *Manager {
	log := cfg.Log
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Manager{cfg: cfg, log: log, daemons: NewDaemons(k, cfg.Daemon, cfg.StateDir, log)}
}

func (m *Manager) role() Role {
	switch {
	case !m.cfg.Follow:
		return RoleBoth
	case m.master:
		return RoleMaster
	}
	return RoleBackup
}

// Start runs the daemons; master is the followed instance's state (false
// before VRRP decided). A failure is returned and retried by the next
// SetMaster or Retry.
func (m *Manager) Start(master bool) error {
	m.master, m.started = master, true
	return m.daemons.Set(m.role())
}

// SetMaster switches the daemons when the followed instance becomes MASTER
// (true) or leaves MASTER (false).
func (m *Manager) SetMaster(master bool) error {
	if !m.started {
		return errors.New("sync not started")
	}
	m.master = master
	return m.daemons.Set(m.role())
}

// Retry applies the current role again, after a failure or to restart a
// daemon that disappeared.
func (m *Manager) Retry() error {
	if !m.started {
		return nil
	}
	return m.daemons.Set(m.role())
}

// Stop stops what directord started.
func (m *Manager) Stop() error {
	if !m.started {
		return nil
	}
	m.started = false
	return m.daemons.Stop()
}

// Status is the sync state for status output and metrics.
type Status struct {
	Daemons DaemonsStatus
}

// Status reports what runs.
func (m *Manager) Status() Status {
	return Status{Daemons: m.daemons.Status()}
}

// Close releases what the Manager runs in directord (nothing yet besides
// the daemons) without stopping the kernel daemons, for a successor
// Manager that takes them over.
func (m *Manager) Close() { m.started = false }
