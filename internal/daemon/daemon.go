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

	"github.com/directord/directord/internal/config"
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
	if len(cfg.IPVS.VirtualServices) > 0 {
		add("ipvs.virtual_services", "IPVS virtual services")
	}
	if t := cfg.IPVS.Timeouts; t != (config.Timeouts{}) {
		add("ipvs.timeouts", "IPVS timeouts")
	}
	if cfg.Sync != nil {
		add("sync", "connection sync")
	}
	if cfg.Node.MetricsAddress != "" {
		add("node.metrics_address", "the metrics listener")
	}
	slices.SortStableFunc(errs, func(a, b config.Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return errs
}

// Loader reads and validates the configuration file; the daemon calls it on
// every reload.
type Loader func() (*config.Config, error)

// Daemon runs one director.
type Daemon struct {
	log  *slog.Logger
	load Loader
	cfg  *config.Config
	vips *vip.Manager
	vrrp *vrrp.Engine
}

// New prepares a daemon for cfg. It removes virtual addresses that an
// earlier run left bound before anything else happens, so a restarted node
// never answers for an address it does not own.
func New(cfg *config.Config, load Loader, log *slog.Logger) (*Daemon, error) {
	vips, err := vip.New(vip.Config{StateDir: cfg.Node.StateDir, Log: log})
	if err != nil {
		return nil, err
	}
	engine, err := vrrp.NewEngine(cfg, vrrp.EngineOptions{Log: log, VIPs: vips})
	if err != nil {
		vips.Close()
		return nil, err
	}
	return &Daemon{log: log, load: load, cfg: cfg, vips: vips, vrrp: engine}, nil
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
	for {
		select {
		case <-ctx.Done():
			d.log.Info("directord stopping", "node", d.cfg.Node.Name)
			stopEngine()
			err := <-engineDone
			return errors.Join(err, d.vips.Close())
		case err := <-engineDone:
			d.vips.Close()
			if err != nil {
				return fmt.Errorf("vrrp: %w", err)
			}
			return nil
		case reply := <-reload:
			err := d.Reload()
			if reply != nil {
				reply <- err
			}
		}
	}
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
		} else if !reflect.DeepEqual(cfg.VRRP, d.cfg.VRRP) {
			err = config.Errors{cfg.ErrorAt("vrrp", "not supported yet: this build applies changes to the vrrp section only at a restart")}
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
		return err
	}
	for _, w := range cfg.Warnings() {
		d.log.Warn("config warning", "warning", w.Error())
	}
	d.cfg = cfg
	d.log.Info("configuration reloaded", "config", cfg.File)
	return nil
}
