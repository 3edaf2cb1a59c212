package sync

import (
	"errors"
	"log/slog"
	"net/netip"

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
	// Relay, if set, carries the sync datagrams over authenticated
	// unicast.
	Relay *RelayConfig
	// ResyncOnBackup asks the peer for its whole table when the followed
	// instance enters BACKUP, and answers the peer's requests while
	// master. It needs the relay: the request and the table travel over
	// it.
	ResyncOnBackup bool
	Log            *slog.Logger
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
		Follow:         s.Follow != "",
		StateDir:       stateDir,
		ResyncOnBackup: s.ResyncOnBackup,
	}
	if r := s.Relay; r != nil {
		c.Relay = &RelayConfig{
			Listen:  netip.AddrPortFrom(r.Listen.Addr, uint16(r.Listen.Port)),
			Peer:    netip.AddrPortFrom(r.Peer.Addr, uint16(r.Peer.Port)),
			KeyFile: r.KeyFile,
		}
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
	relay   *Relay
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
	var errs []error
	if m.cfg.Relay != nil {
		r, err := NewRelay(*m.cfg.Relay, m.cfg.Daemon, m.cfg.ResyncOnBackup, m.log)
		if err != nil {
			errs = append(errs, err)
		} else {
			m.relay = r
			r.SetMaster(master || !m.cfg.Follow)
			r.Start()
			m.log.Info("sync relay running", "listen", m.cfg.Relay.Listen.String(), "peer", m.cfg.Relay.Peer.String())
		}
	} else if m.cfg.ResyncOnBackup && m.cfg.Follow {
		m.log.Info("resync_on_backup needs sync.relay: without it a recovering backup learns only the connections that change or refresh")
	}
	errs = append(errs, m.daemons.Set(m.role()))
	return errors.Join(errs...)
}

// SetMaster switches the daemons when the followed instance becomes MASTER
// (true) or leaves MASTER (false).
func (m *Manager) SetMaster(master bool) error {
	if !m.started {
		return errors.New("sync not started")
	}
	m.master = master
	if m.relay != nil {
		m.relay.SetMaster(master || !m.cfg.Follow)
	}
	return m.daemons.Set(m.role())
}

// EnteredBackup asks the peer for its whole table (resync_on_backup) when
// the followed instance has just entered BACKUP: the peer is, or is about
// to be, master, and this director may have missed connections while it
// was away.
func (m *Manager) EnteredBackup() {
	if m.relay != nil && m.cfg.Follow {
		m.log.Info("asking the peer for a full resync")
		m.relay.RequestResync()
	}
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
	m.closeRelay()
	return m.daemons.Stop()
}

func (m *Manager) closeRelay() {
	if m.relay != nil {
		m.relay.Close()
		m.relay = nil
	}
}

// Status is the sync state for status output and metrics.
type Status struct {
	Daemons DaemonsStatus
	// Relay is nil without a relay.
	Relay *RelayStats
}

// Status reports what runs.
func (m *Manager) Status() Status {
	st := Status{Daemons: m.daemons.Status()}
	if m.relay != nil {
		rs := m.relay.Stats()
		st.Relay = &rs
	}
	return st
}

// Close stops the relay but leaves the kernel daemons running, for a
// successor Manager (a reload) that takes them over.
func (m *Manager) Close() {
	m.started = false
	m.closeRelay()
}
