package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/internal/kaimport"
)

// importResult is the --json output of import-keepalived.
type importResult struct {
	YAML           string          `json:"yaml"`
	NotCarriedOver []kaimport.Note `json:"not_carried_over"`
	// Errors are directord's objections to the converted file, if any.
	Errors []string `json:"errors,omitempty"`
}

// importKeepalived converts a keepalived.conf: the YAML goes to stdout,
// what was not carried over to stderr. It needs no control socket. It
// exits 1 when the file cannot be read or parsed, or when the converted
// configuration does not validate (the YAML is still written, to fix by
// hand).
func importKeepalived(args []string, jsonOut bool, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("directorctl import-keepalived", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { fmt.Fprintln(stderr, "Usage: directorctl import-keepalived [--json] FILE") }
	asJSON := fs.Bool("json", jsonOut, "machine-readable output")
	// Flags may stand before or after FILE.
	var files []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return exitOK
			}
			return exitUsage
		}
		if fs.NArg() == 0 {
			break
		}
		files = append(files, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(files) != 1 {
		fs.Usage()
		return exitUsage
	}
	path := files[0]

	out, notes, err := kaimport.Convert(path)
	if err != nil {
		fmt.Fprintf(stderr, "directorctl: import-keepalived: %v\n", err)
		return exitFail
	}
	var problems []string
	var warnings config.Errors
	cfg, err := config.Parse(path+" (converted)", out)
	var errs config.Errors
	switch {
	case errors.As(err, &errs):
		for _, e := range errs {
			problems = append(problems, e.Error())
		}
	case err != nil:
		problems = append(problems, err.Error())
	default:
		warnings = cfg.Warnings()
	}

	if *asJSON {
		res := importResult{YAML: string(out), NotCarriedOver: notes, Errors: problems}
		if res.NotCarriedOver == nil {
			res.NotCarriedOver = []kaimport.Note{}
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(res); err != nil {
			fmt.Fprintf(stderr, "directorctl: import-keepalived: %v\n", err)
			return exitFail
		}
	} else {
		if _, err := stdout.Write(out); err != nil {
			fmt.Fprintf(stderr, "directorctl: import-keepalived: %v\n", err)
			return exitFail
		}
		if len(notes) > 0 {
			fmt.Fprintf(stderr, "directorctl: %d keepalived options not carried over (or not exactly):\n", len(notes))
			for _, n := range notes {
				fmt.Fprintln(stderr, "  "+n.String())
			}
		}
		for _, w := range warnings {
			fmt.Fprintln(stderr, "warning: "+w.Error())
		}
		if len(problems) > 0 {
			fmt.Fprintln(stderr, "directorctl: the converted configuration does not validate; fix it by hand:")
			for _, p := range problems {
				fmt.Fprintln(stderr, "  "+p)
			}
		}
	}
	if len(problems) > 0 {
		return exitFail
	}
	return exitOK
}
