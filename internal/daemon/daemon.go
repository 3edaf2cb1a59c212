// Package daemon is directord's event loop: it owns the running
// configuration and every piece of state built from it, and applies reloads
// as a difference against what runs.
package daemon

import (
	"cmp"
	"context"
	"errors"
	"log/slog"
	"slices"

	"github.com/directord/directord/internal/config"
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
	if len(cfg.VRRP.Instances) > 0 {
		add("vrrp.instances", "VRRP")
	}
	if len(cfg.VRRP.SyncGroups) > 0 {
		add("vrrp.sync_groups", "VRRP sync groups")
	}
	if len(cfg.VRRP.Scripts) > 0 {
		add("vrrp.scripts", "tracked scripts")
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
}

// New returns a daemon that runs cfg and reloads through load.
func New(cfg *config.Config, load Loader, log *slog.Logger) *Daemon {
	return &Daemon{log: log, load: load, cfg: cfg}
}

// Config returns the configuration that is running.
func (d *Daemon) Config() *config.Config { return d.cfg }

// Run serves until ctx is done. A value on reload asks for a reload; the
// result is sent back on the channel it carries (nil or the errors), so a
// caller such as the control socket can report a failed reload.
func (d *Daemon) Run(ctx context.Context, reload <-chan chan<- error) error {
	d.log.Info("directord running", "node", d.cfg.Node.Name, "config", d.cfg.File)
	for {
		select {
		case <-ctx.Done():
			d.log.Info("directord stopping", "node", d.cfg.Node.Name)
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
