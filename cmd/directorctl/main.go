// Command directorctl talks to a running directord over its control socket:
// status, the IPVS table, health checks, events, reload and failover drills.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
)

const defaultSocket = "/run/directord/directord.sock"

// Exit codes: 2 for a usage error, 1 when the command failed.
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
)

type command struct {
	name, args, help string
}

var commands = []command{
	{"status", "", "per VRRP instance: state, effective priority and why, master seen, VIPs, last transitions"},
	{"ipvs", "[--stats|--rate|--conns]", "the IPVS table as ipvsadm -Ln prints it, with each real server's health"},
	{"health", "", "every health check, its last result and the reason"},
	{"events", "", "stream state transitions as they happen"},
	{"reload", "", "reload the configuration; exits non-zero with the errors if it is rejected"},
	{"drill", "INSTANCE [--return]", "hand INSTANCE over to the peer and report the handover time; --return takes it back"},
	{"import-keepalived", "FILE", "convert a keepalived.conf into a directord configuration"},
}

func usage(w io.Writer) {
	fmt.Fprintf(w, "Usage: directorctl [-s SOCKET] [--json] COMMAND [ARGS]\n\nCommands:\n")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-34s %s\n", c.name+" "+c.args, c.help)
	}
	fmt.Fprintf(w, "\nOptions:\n  -s SOCKET   control socket (default %s)\n  --json      machine-readable output\n", defaultSocket)
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("directorctl", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() { usage(stderr) }
	fs.String("s", defaultSocket, "control socket")
	fs.Bool("json", false, "machine-readable output")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			usage(stdout)
			return exitOK
		}
		return exitUsage
	}
	if fs.NArg() == 0 {
		usage(stderr)
		return exitUsage
	}
	name := fs.Arg(0)
	if name == "help" {
		usage(stdout)
		return exitOK
	}
	if name == "import-keepalived" {
		return importKeepalived(fs.Args()[1:], fs.Lookup("json").Value.String() == "true", stdout, stderr)
	}
	socket, asJSON := fs.Lookup("s").Value.String(), fs.Lookup("json").Value.String() == "true"
	switch name {
	case "status", "ipvs", "health", "events", "reload", "drill":
		return socketCommand(name, fs.Args()[1:], socket, asJSON, stdout, stderr)
	}
	for _, c := range commands {
		if c.name == name {
			fmt.Fprintf(stderr, "directorctl: %s: not supported yet\n", name)
			return exitFail
		}
	}
	fmt.Fprintf(stderr, "directorctl: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}
