package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/directord/directord/internal/control"
)

// callTimeout bounds a request; a reload may take longer (it waits for
// the daemon to apply the file).
const (
	callTimeout   = 15 * time.Second
	reloadTimeout = 75 * time.Second
	drillTimeout  = 5 * time.Minute
)

// socketCommand runs a command that talks to the daemon.
func socketCommand(name string, args []string, socket string, asJSON bool, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("directorctl "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.BoolVar(&asJSON, "json", asJSON, "machine-readable output")
	var stats, rate, conns, ret bool
	if name == "drill" {
		fs.BoolVar(&ret, "return", false, "take mastership back after the handover")
	}
	if name == "ipvs" {
		fs.BoolVar(&stats, "stats", false, "counters")
		fs.BoolVar(&rate, "rate", false, "rates")
		fs.BoolVar(&conns, "conns", false, "connections")
	}
	// The instance may come before the flags: drill VI_1 --return.
	var instance string
	if name == "drill" && len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		instance, args = args[0], args[1:]
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return exitOK
		}
		return exitUsage
	}
	if name == "drill" && instance == "" && fs.NArg() > 0 {
		instance = fs.Arg(0)
		_ = fs.Parse(fs.Args()[1:])
	}
	if name == "drill" && instance == "" {
		fmt.Fprintln(stderr, "directorctl drill: name the VRRP instance: directorctl drill INSTANCE [--return]")
		return exitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "directorctl %s: unexpected argument %q\n", name, fs.Arg(0))
		return exitUsage
	}
	fail := func(err error) int {
		fmt.Fprintf(stderr, "directorctl %s: %v\n", name, err)
		return exitFail
	}
	if name == "events" {
		return events(socket, asJSON, stdout, stderr)
	}
	cmd, timeout := name, callTimeout
	switch {
	case name == "reload":
		timeout = reloadTimeout
	case name == "drill":
		timeout = drillTimeout
	case name == "ipvs" && conns:
		cmd = control.CmdConns
	}
	r, err := control.Call(socket, control.Request{Command: cmd, Instance: instance, Return: ret}, timeout)
	if err != nil {
		return fail(err)
	}
	if !r.OK {
		fmt.Fprintf(stderr, "directorctl %s: %s\n", name, r.Error)
		for _, e := range r.Errors {
			fmt.Fprintf(stderr, "  %s\n", e)
		}
		if asJSON {
			b, _ := json.Marshal(r)
			fmt.Fprintf(stdout, "%s\n", b)
		}
		return exitFail
	}
	if asJSON {
		if len(r.Data) == 0 {
			r.Data = json.RawMessage(`{"ok":true}`)
		}
		fmt.Fprintf(stdout, "%s\n", r.Data)
		return exitOK
	}
	var perr error
	switch cmd {
	case control.CmdStatus:
		var st control.Status
		if perr = json.Unmarshal(r.Data, &st); perr == nil {
			printStatus(stdout, st)
		}
	case control.CmdIPVS:
		var t control.IPVSTable
		if perr = json.Unmarshal(r.Data, &t); perr == nil {
			printIPVS(stdout, t, stats, rate)
		}
	case control.CmdConns:
		var cs []control.Conn
		if perr = json.Unmarshal(r.Data, &cs); perr == nil {
			printConns(stdout, cs)
		}
	case control.CmdHealth:
		var h control.HealthReport
		if perr = json.Unmarshal(r.Data, &h); perr == nil {
			printHealth(stdout, h)
		}
	case control.CmdReload:
		fmt.Fprintln(stdout, "configuration reloaded")
	case control.CmdDrill:
		var d control.DrillReport
		if perr = json.Unmarshal(r.Data, &d); perr == nil {
			printDrill(stdout, d)
		}
	}
	if perr != nil {
		return fail(fmt.Errorf("directord's answer: %w", perr))
	}
	return exitOK
}

func table(w io.Writer) *tabwriter.Writer { return tabwriter.NewWriter(w, 0, 0, 2, ' ', 0) }

func clock(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.Local().Format("2006-01-02 15:04:05.000")
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func printStatus(w io.Writer, st control.Status) {
	fmt.Fprintf(w, "node %s, config %s\n\n", st.Node, st.Config)
	if len(st.Instances) == 0 {
		fmt.Fprintln(w, "no VRRP instances")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "INSTANCE\tINTERFACE\tVRID\tSTATE\tPRIORITY\tWHY\tMASTER\tVIPS\tSINCE\tMAX LATE")
	for _, in := range st.Instances {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%s\t%s\t%s\t%s\t%.1fms\n", in.Name, in.Interface, in.VRID, in.State, in.Priority,
			in.PriorityWhy, orDash(in.Master), orDash(strings.Join(in.VIPs, ",")), clock(in.LastChangedAt), in.MaxTimerLatenessMS)
	}
	tw.Flush()
	fmt.Fprintln(w, "\nlast transitions:")
	tw = table(w)
	any := false
	for _, in := range st.Instances {
		for _, tr := range in.Transitions {
			any = true
			fmt.Fprintf(tw, "  %s\t%s\t%s -> %s\tpriority %d\t%s\n", clock(tr.At), tr.Instance, tr.From, tr.To, tr.Priority, tr.Reason)
		}
	}
	if !any {
		fmt.Fprintln(tw, "  none")
	}
	tw.Flush()
}

// printIPVS prints the table in ipvsadm -Ln's layout, with a health
// column (and the service's name from the configuration).
func printIPVS(w io.Writer, t control.IPVSTable, stats, rate bool) {
	num := func(s control.Stats) string {
		if rate {
			return fmt.Sprintf("%8d %8d %8d %8d %8d", s.CPS, s.InPPS, s.OutPPS, s.InBPS, s.OutBPS)
		}
		return fmt.Sprintf("%8d %8d %8d %8d %8d", s.Conns, s.InPkts, s.OutPkts, s.InBytes, s.OutBytes)
	}
	switch {
	case stats:
		fmt.Fprintf(w, "%-34s %8s %8s %8s %8s %8s\n", "Prot LocalAddress:Port", "Conns", "InPkts", "OutPkts", "InBytes", "OutBytes")
		fmt.Fprintln(w, "  -> RemoteAddress:Port")
	case rate:
		fmt.Fprintf(w, "%-34s %8s %8s %8s %8s %8s\n", "Prot LocalAddress:Port", "CPS", "InPPS", "OutPPS", "InBPS", "OutBPS")
		fmt.Fprintln(w, "  -> RemoteAddress:Port")
	default:
		fmt.Fprintln(w, "Prot LocalAddress:Port Scheduler Flags")
		fmt.Fprintln(w, "  -> RemoteAddress:Port           Forward Weight ActiveConn InActConn Health")
	}
	for _, s := range t.Services {
		if stats || rate {
			fmt.Fprintf(w, "%-34s %s\n", s.Key, num(s.Stats))
			for _, r := range s.Reals {
				fmt.Fprintf(w, "%-34s %s\n", "  -> "+r.Address, num(r.Stats))
			}
			continue
		}
		head := s.Key + " " + s.Scheduler
		if len(s.Flags) > 0 {
			head += " (" + strings.Join(s.Flags, ",") + ")"
		}
		if s.Persistence > 0 {
			head += fmt.Sprintf(" persistent %d", s.Persistence)
			if s.Netmask != "" {
				head += " mask " + s.Netmask
			}
		}
		if s.Name != "" {
			head += " [" + s.Name + "]"
		}
		fmt.Fprintln(w, head)
		for _, r := range s.Reals {
			health := r.Health
			if r.Reason != "" && r.Health == "down" {
				health += ": " + r.Reason
			}
			fmt.Fprintf(w, "  -> %-28s %-7s %-6d %-10d %-9d %s\n", r.Address, r.Forward, r.Weight, r.ActiveConns, r.InactiveConns, health)
		}
	}
}

func printDrill(w io.Writer, d control.DrillReport) {
	fmt.Fprintf(w, "drill %s on %s (advert interval %s)", d.Instance, d.Node, d.AdvertInterval)
	if !d.Started.IsZero() {
		fmt.Fprintf(w, " started %s", d.Started.Format("2006-01-02T15:04:05.000Z07:00"))
	}
	fmt.Fprintln(w)
	for _, s := range d.Steps {
		fmt.Fprintf(w, "  %+10.1fms  %s\n", s.AtMS, s.What)
	}
	part := func(what string, v float64) string {
		if v < 0 {
			return what + " -"
		}
		return fmt.Sprintf("%s %.1f ms", what, v)
	}
	fmt.Fprintf(w, "handover: %s, %s", part("peer's first advert", d.PeerAdvertMS), part("VIP answering from the peer", d.VIPAnswerMS))
	if d.TakeBackMS >= 0 {
		fmt.Fprintf(w, ", %s", part("MASTER again", d.TakeBackMS))
	}
	fmt.Fprintln(w)
}

func printConns(w io.Writer, cs []control.Conn) {
	tw := table(w)
	fmt.Fprintln(tw, "pro\texpire\tstate\tsource\tvirtual\tdestination")
	for _, c := range cs {
		fmt.Fprintf(tw, "%s\t%02d:%02d\t%s\t%s\t%s\t%s\n", c.Protocol, c.ExpiresS/60, c.ExpiresS%60, c.State, c.Client, c.Virtual, c.Destination)
	}
	tw.Flush()
}

func printHealth(w io.Writer, h control.HealthReport) {
	if len(h.Checks) == 0 {
		fmt.Fprintln(w, "no health checks: no real servers are configured")
		return
	}
	tw := table(w)
	fmt.Fprintln(tw, "SERVICE\tREAL\tTYPE\tTARGET\tSTATE\tSINCE\tLATENCY\tREASON")
	for _, c := range h.Checks {
		lat := "-"
		if c.LatencyMS > 0 {
			lat = fmt.Sprintf("%.1fms", c.LatencyMS)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", c.Service, c.Real, c.Type, orDash(c.Target), c.State, clock(c.Since), lat, orDash(c.Reason))
	}
	tw.Flush()
}

// events prints events as they come until interrupted.
func events(socket string, asJSON bool, stdout, stderr io.Writer) int {
	stop := make(chan struct{})
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sig)
	go func() {
		<-sig
		close(stop)
	}()
	err := control.Events(socket, stop, func(e control.Event) bool {
		if asJSON {
			b, _ := json.Marshal(e)
			fmt.Fprintf(stdout, "%s\n", b)
			return true
		}
		fmt.Fprintln(stdout, formatEvent(e))
		return true
	})
	if err != nil {
		fmt.Fprintf(stderr, "directorctl events: %v\n", err)
		return exitFail
	}
	return exitOK
}

func formatEvent(e control.Event) string {
	at := clock(e.At)
	switch e.Kind {
	case "vrrp":
		return fmt.Sprintf("%s vrrp %s %s -> %s priority %d: %s", at, e.Instance, e.From, e.To, e.Priority, e.Reason)
	case "health":
		state := "down"
		if e.Up != nil && *e.Up {
			state = "up"
		}
		return fmt.Sprintf("%s health %s %s: %s", at, e.Check, state, e.Reason)
	}
	return fmt.Sprintf("%s %s %s", at, e.Kind, e.Reason)
}
