// Command directord is the LVS director daemon: VRRP, virtual addresses,
// the IPVS table, health checks and connection sync, from one YAML file.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/internal/daemon"
)

const defaultConfig = "/etc/directord/directord.yaml"

// Exit codes: 2 means the configuration is at fault, 1 anything else.
const (
	exitOK     = 0
	exitFail   = 1
	exitConfig = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func usage(w io.Writer) {
	fmt.Fprintf(w, `Usage:
  directord [-c FILE] [--flush-on-stop]   run the director
  directord check [-c FILE] [--strict]    validate FILE, print every error, exit 0 or 2

FILE defaults to %s.
Signals: SIGHUP reloads the configuration; SIGTERM or SIGINT stops.
`, defaultConfig)
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "check" {
		return check(args[1:], stdout, stderr)
	}
	fs := flag.NewFlagSet("directord", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr) }
	path := fs.String("c", defaultConfig, "configuration file")
	// IPVS services are kept on stop unless it is set.
	flush := fs.Bool("flush-on-stop", false, "remove the IPVS services directord installed when it stops")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "directord: unexpected argument %q\n", fs.Arg(0))
		usage(stderr)
		return exitConfig
	}

	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	if errs := daemon.Unsupported(cfg); len(errs) > 0 {
		fmt.Fprintln(stderr, errs)
		return exitConfig
	}
	log := newLogger(cfg.Node.Log, stderr)
	for _, w := range cfg.Warnings() {
		log.Warn("config warning", "warning", w.Error())
	}

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	reload := make(chan chan<- error)
	go func() {
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				select {
				case reload <- nil:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	d, err := daemon.New(cfg, func() (*config.Config, error) { return config.Load(*path) }, log, daemon.Options{FlushOnStop: *flush})
	if err != nil {
		fmt.Fprintln(stderr, "directord:", err)
		var ce config.Error
		if errors.As(err, &ce) {
			return exitConfig
		}
		return exitFail
	}
	if err := d.Run(ctx, reload); err != nil {
		log.Error("directord failed", "error", err)
		return exitFail
	}
	return exitOK
}

func check(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("directord check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr) }
	path := fs.String("c", defaultConfig, "configuration file")
	strict := fs.Bool("strict", false, "treat warnings (ignored settings) as errors")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitConfig
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitConfig
	}
	warns := cfg.Warnings()
	for _, w := range warns {
		prefix := "warning: "
		if *strict {
			prefix = "error (--strict): "
		}
		fmt.Fprintln(stderr, prefix+w.Error())
	}
	if *strict && len(warns) > 0 {
		return exitConfig
	}
	fmt.Fprintf(stdout, "%s: configuration is valid (%d VRRP instances, %d virtual services)\n",
		*path, len(cfg.VRRP.Instances), len(cfg.IPVS.VirtualServices))
	if errs := daemon.Unsupported(cfg); len(errs) > 0 {
		fmt.Fprintln(stderr, "note: this build cannot run the file yet:")
		for _, e := range errs {
			fmt.Fprintln(stderr, "  "+e.Error())
		}
	}
	return exitOK
}

func newLogger(c config.Log, w io.Writer) *slog.Logger {
	var level slog.Level
	// The level was validated; UnmarshalText accepts exactly those names.
	_ = level.UnmarshalText([]byte(c.Level))
	opts := &slog.HandlerOptions{Level: level}
	if c.Format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}
