// Package daemon is directord's event loop: it owns the running
// configuration and every piece of state built from it, and applies reloads
// as a difference against what runs.
package daemon

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/directord/directord/healthcheck"
	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/internal/control"
	"github.com/directord/directord/internal/sdnotify"
	"github.com/directord/directord/ipvs"
	connsync "github.com/directord/directord/sync"
	"github.com/directord/directord/vip"
	"github.com/directord/directord/vrrp"
)

// Unsupported returns an error for every configured section this build
// cannot run yet. The daemon refuses such a file rather than run with part
// of it silently ignored; `directord check` still validates the whole
// contract.
func Unsupported(cfg *config.Config) config.Errors {
	var errs config.Errors
	add := func(path, what string) {
		errs = append(errs, cfg.ErrorAt(path, "not supported yet: this build of directord cannot run "+what))
	}
	if cfg.Sync != nil && cfg.Sync.Relay != nil && cfg.Sync.Group.Is6() {
		add("sync.relay", "a relay for an IPv6 sync group")
	}
	slices.SortStableFunc(errs, func(a, b config.Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return errs
}

// Loader reads and validates the configuration file; the daemon calls it on
// every reload.
type Loader func() (*config.Config, error)

// Options change how the daemon runs.
type Options struct {
	// FlushOnStop removes the IPVS services directord installed when it
	// stops; by default they stay, so traffic keeps flowing.
	FlushOnStop bool
}

// Daemon runs one director.
type Daemon struct {
	log  *slog.Logger
	load Loader
	opts Options
	cfg  *config.Config
	vips *vip.Manager
	vrrp *vrrp.Engine
	// ipvs is nil when the kernel has no IPVS and nothing asks for it.
	ipvs       *ipvs.Manager
	ipvsKernel ipvs.Kernel
	checks     *healthcheck.Scheduler
	health     health
	// vrrpEvents carries the engine's transitions to the daemon's loop;
	// the engine never waits for it (see onTransition).
	vrrpEvents chan vrrp.Transition
	lostEvents atomic.Uint64
	// history holds each instance's last transitions, oldest first.
	history map[string][]vrrp.Transition
	syncRun *syncRun // nil without a sync section (sync.go)

	// What the control socket reads (control.go): the running
	// configuration, and under histMu the history and when each check
	// last changed.
	running    atomic.Pointer[config.Config]
	histMu     sync.Mutex
	checkSince map[string]time.Time
	ctl        *control.Server
	ctlReload  chan chan<- error
	events     control.Broker

	// The metrics listener (metrics.go) and what it reads besides.
	metrics       *metricsServer
	reloadsOK     atomic.Uint64
	reloadsFailed atomic.Uint64
	syncSnap      atomic.Pointer[connsync.Status]
}

// New prepares a daemon for cfg. It removes virtual addresses and IPVS
// services that an earlier run left behind before anything else happens,
// so a restarted node never answers for an address it does not own, and
// installs the IPVS table: every director keeps it, master or not.
func New(cfg *config.Config, load Loader, log *slog.Logger, opts Options) (*Daemon, error) {
	d := &Daemon{log: log, load: load, opts: opts, cfg: cfg, health: health{}, vrrpEvents: make(chan vrrp.Transition, 1024),
		history: map[string][]vrrp.Transition{}, checkSince: map[string]time.Time{}, ctlReload: make(chan chan<- error)}
	d.running.Store(cfg)
	if err := d.startControl(); err != nil {
		return nil, err
	}
	ok := false
	defer func() {
		if !ok {
			d.stopControl()
		}
	}()
	d.checks = healthcheck.NewScheduler(healthcheck.NewChecker, log)
	if err := d.checks.Update(checkSpecs(cfg)); err != nil {
		return nil, err
	}
	var err error
	if d.vips, err = vip.New(vip.Config{StateDir: cfg.Node.StateDir, Log: log}); err != nil {
		return nil, err
	}
	if err := d.startIPVS(); err != nil {
		d.vips.Close()
		return nil, err
	}
	if err := d.startSync(); err != nil {
		d.vips.Close()
		d.closeIPVS()
		return nil, err
	}
	if d.vrrp, err = vrrp.NewEngine(cfg, vrrp.EngineOptions{Log: log, VIPs: d.vips, OnTransition: d.onTransition}); err != nil {
		d.vips.Close()
		d.closeIPVS()
		return nil, err
	}
	if err := d.startMetrics(); err != nil {
		d.vips.Close()
		d.stopSync()
		d.closeIPVS()
		return nil, err
	}
	d.refreshSyncSnap()
	ok = true
	return d, nil
}

func ipvsConfigured(cfg *config.Config) bool {
	return len(cfg.IPVS.VirtualServices) > 0 || cfg.IPVS.Timeouts != (config.Timeouts{})
}

func (d *Daemon) startIPVS() error {
	k, err := ipvs.NewKernel()
	if err != nil {
		if !ipvsConfigured(d.cfg) {
			// Nothing to install, and nothing an earlier run could have
			// installed in a kernel without IPVS.
			d.log.Debug("no IPVS in this kernel; the ipvs section is empty", "error", err)
			return nil
		}
		return err
	}
	m, err := ipvs.NewManager(k, d.cfg.Node.StateDir, d.log)
	if err != nil {
		k.Close()
		return err
	}
	d.ipvs, d.ipvsKernel = m, k
	desired := ipvs.Desired(d.cfg, d.health)
	if _, err := m.RemoveStale(desired); err != nil {
		d.log.Error("cannot remove IPVS services of an earlier run; retrying at the next resync", "error", err)
	}
	if _, err := m.Apply(desired); err != nil {
		d.log.Error("IPVS table not fully applied; retrying at the next resync", "error", err)
	}
	return nil
}

func (d *Daemon) closeIPVS() {
	if d.ipvsKernel != nil {
		d.ipvsKernel.Close()
	}
}

// reportQuorum tells VRRP whether each virtual service has its quorum of
// healthy real servers (track.services).
func (d *Daemon) reportQuorum() {
	for name, up := range ipvs.Quorum(d.cfg, d.health) {
		d.vrrp.SetService(name, up)
	}
}

// Config returns the configuration that is running.
func (d *Daemon) Config() *config.Config { return d.cfg }

// Run serves until ctx is done. A value on reload asks for a reload; the
// result is sent back on the channel it carries (nil or the errors), so a
// caller such as the control socket can report a failed reload.
//
// On stop every master sends a priority-0 advert and then releases its
// addresses; IPVS services are kept.
func (d *Daemon) Run(ctx context.Context, reload <-chan chan<- error) error {
	d.log.Info("directord running", "node", d.cfg.Node.Name, "config", d.cfg.File, "instances", len(d.cfg.VRRP.Instances))
	engineCtx, stopEngine := context.WithCancel(context.Background())
	defer stopEngine()
	engineDone := make(chan error, 1)
	go func() { engineDone <- d.vrrp.Run(engineCtx) }()
	checksCtx, stopChecks := context.WithCancel(context.Background())
	defer stopChecks()
	transitions := d.checks.Start(checksCtx)
	d.reportQuorum()
	go d.ctl.Serve()
	d.notify(sdnotify.Ready(d.readyStatus()))
	var watchdog <-chan time.Time
	if iv := sdnotify.WatchdogInterval(); iv > 0 {
		// Pinged from this loop: a loop that hangs stops the pings, and
		// systemd restarts the daemon.
		t := time.NewTicker(iv)
		defer t.Stop()
		watchdog = t.C
	}
	resync := time.NewTicker(d.cfg.IPVS.ResyncInterval)
	defer resync.Stop()
	for {
		select {
		case <-ctx.Done():
			d.log.Info("directord stopping", "node", d.cfg.Node.Name)
			d.notify(sdnotify.Stopping())
			stopEngine()
			err := <-engineDone
			d.stopControl()
			d.stopMetrics()
			return errors.Join(err, d.stopSync(), d.vips.Close(), d.stopIPVS())
		case err := <-engineDone:
			d.stopControl()
			d.stopMetrics()
			d.stopSync()
			d.vips.Close()
			d.closeIPVS()
			if err != nil {
				return fmt.Errorf("vrrp: %w", err)
			}
			return nil
		case tr, ok := <-transitions:
			if !ok {
				transitions = nil
				continue
			}
			d.realChanged(tr, drain(transitions, maxBatch))
		case tr := <-d.vrrpEvents:
			d.vrrpChanged(tr)
		case <-resync.C:
			d.refreshSyncSnap()
			if d.ipvs != nil {
				if _, err := d.ipvs.Resync(); err != nil {
					d.log.Error("IPVS resync incomplete; retrying", "error", err)
				}
			}
		case reply := <-reload:
			err := d.reloadNotified()
			if reply != nil {
				reply <- err
			}
			resync.Reset(d.cfg.IPVS.ResyncInterval)
		case reply := <-d.ctlReload:
			reply <- d.reloadNotified()
			resync.Reset(d.cfg.IPVS.ResyncInterval)
		case <-watchdog:
			d.notify(sdnotify.Watchdog())
		}
	}
}

// realChanged applies health transitions: the IPVS table follows them
// (remove or quiesce, sorry server) and VRRP learns the services' quorum.
// Transitions that are already waiting are applied with first, at one
// table computation for the lot: 10,000 checks deciding at startup cost
// one pass, not 10,000.
func (d *Daemon) realChanged(first healthcheck.Transition, more []healthcheck.Transition) {
	for _, tr := range append([]healthcheck.Transition{first}, more...) {
		state := "down"
		if tr.Up {
			state = "up"
		}
		d.log.Info("real server "+state, "check", tr.ID, "reason", tr.Reason)
		d.health[tr.ID] = tr
		d.histMu.Lock()
		d.checkSince[tr.ID] = tr.At
		d.histMu.Unlock()
		up := tr.Up
		d.events.Publish(control.Event{At: tr.At, Kind: "health", Check: tr.ID, Up: &up, Reason: tr.Reason})
	}
	if d.ipvs != nil {
		if _, err := d.ipvs.Apply(ipvs.Desired(d.cfg, d.health)); err != nil {
			d.log.Error("IPVS table not fully applied; retrying at the next resync", "error", err)
		}
	}
	d.reportQuorum()
}

// maxBatch bounds the transitions realChanged takes at once, so the loop
// still serves VRRP events and reloads during a flood.
const maxBatch = 4096

// drain returns what is waiting on c, up to max values, without blocking.
func drain[T any](c <-chan T, max int) []T {
	var out []T
	for len(out) < max {
		select {
		case v, ok := <-c:
			if !ok {
				return out
			}
			out = append(out, v)
		default:
			return out
		}
	}
	return out
}

// onTransition runs on the VRRP engine's loop, which must never wait for
// the daemon: the transition is queued for the daemon's loop, and counted
// as lost if the queue is full.
func (d *Daemon) onTransition(tr vrrp.Transition) {
	select {
	case d.vrrpEvents <- tr:
	default:
		d.lostEvents.Add(1)
	}
}

// vrrpChanged runs on the daemon's loop for every VRRP transition, in
// order.
func (d *Daemon) vrrpChanged(tr vrrp.Transition) {
	d.histMu.Lock()
	h := append(d.history[tr.Instance], tr)
	if len(h) > historyLen {
		h = slices.Delete(h, 0, len(h)-historyLen)
	}
	d.history[tr.Instance] = h
	d.histMu.Unlock()
	d.events.Publish(control.Event{At: tr.At, Kind: "vrrp", Instance: tr.Instance, From: tr.From.String(), To: tr.To.String(), Priority: int(tr.Priority), Reason: tr.Reason})
	d.syncTransition(tr)
	d.refreshSyncSnap()
}

// historyLen is how many transitions per instance status shows.
const historyLen = 10

// stopIPVS keeps the installed services (traffic keeps flowing while
// directord restarts) unless FlushOnStop asks to remove them.
func (d *Daemon) stopIPVS() error {
	if d.ipvs == nil {
		return nil
	}
	defer d.closeIPVS()
	if !d.opts.FlushOnStop {
		return nil
	}
	_, err := d.ipvs.Apply(ipvs.Table{})
	if err == nil {
		d.log.Info("IPVS services removed (--flush-on-stop)")
	}
	return err
}

// Reload reads the configuration again. A file that does not validate, or
// that asks for something this build cannot run, is rejected as a whole: the
// running configuration stays untouched and every error is logged and
// returned.
func (d *Daemon) Reload() error {
	cfg, err := d.load()
	if err == nil {
		if errs := Unsupported(cfg); len(errs) > 0 {
			err = errs
		} else if cerr := d.vrrp.CheckUpdate(d.cfg, cfg); cerr != nil {
			err = cerr
		} else if d.ipvs == nil && ipvsConfigured(cfg) {
			_, kerr := ipvs.NewKernel()
			err = config.Errors{cfg.ErrorAt("ipvs", kerr.Error())}
		} else if uerr := d.checks.Update(checkSpecs(cfg)); uerr != nil {
			// Unchanged checks keep running with their state.
			err = uerr
		}
	}
	if err != nil {
		var errs config.Errors
		if errors.As(err, &errs) {
			for _, e := range errs {
				d.log.Error("reload rejected", "error", e.Error())
			}
		} else {
			d.log.Error("reload rejected", "error", err)
		}
		d.log.Warn("reload failed; still running the previous configuration", "config", d.cfg.File)
		d.events.Publish(control.Event{At: time.Now(), Kind: "reload", Reason: "rejected: " + firstLine(err)})
		d.reloadsFailed.Add(1)
		return err
	}
	for _, w := range cfg.Warnings() {
		d.log.Warn("config warning", "warning", w.Error())
	}
	old := d.cfg
	d.cfg = cfg
	d.running.Store(cfg)
	if cfg.Node.ControlSocket != old.Node.ControlSocket {
		d.moveControl()
	}
	d.health.prune(checkSpecs(cfg))
	if !reflect.DeepEqual(cfg.VRRP, old.VRRP) {
		// Unchanged instances keep their state; see vrrp.Engine.Update.
		if err := d.vrrp.Update(cfg); err != nil {
			d.log.Error("VRRP changes not applied", "error", err)
		}
	}
	d.reloadSync(old)
	if d.ipvs != nil && !reflect.DeepEqual(cfg.IPVS, old.IPVS) {
		// Only the difference: unchanged services are not touched.
		if _, err := d.ipvs.Apply(ipvs.Desired(cfg, d.health)); err != nil {
			d.log.Error("IPVS table not fully applied; retrying at the next resync", "error", err)
		}
		d.reportQuorum()
	}
	d.log.Info("configuration reloaded", "config", cfg.File)
	d.reloadMetrics(old)
	d.refreshSyncSnap()
	d.reloadsOK.Add(1)
	d.events.Publish(control.Event{At: time.Now(), Kind: "reload", Reason: "configuration reloaded"})
	return nil
}

// reloadNotified is Reload between RELOADING=1 and READY=1 to systemd.
func (d *Daemon) reloadNotified() error {
	d.notify(sdnotify.Reloading())
	err := d.Reload()
	d.notify(sdnotify.Ready(d.readyStatus()))
	return err
}

func (d *Daemon) readyStatus() string {
	return fmt.Sprintf("%d VRRP instances, %d virtual services, %d health checks",
		len(d.cfg.VRRP.Instances), len(d.cfg.IPVS.VirtualServices), len(checkSpecs(d.cfg)))
}

// notify logs a failed notification to systemd; the daemon goes on.
func (d *Daemon) notify(err error) {
	if err != nil {
		d.log.Warn("cannot notify systemd", "error", err)
	}
}

// firstLine is err's first line, for an event.
func firstLine(err error) string {
	s, _, _ := strings.Cut(err.Error(), "\n")
	return s
}
