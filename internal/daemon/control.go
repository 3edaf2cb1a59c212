package daemon

import (
	"errors"
	"fmt"
	"maps"
	"net/netip"
	"time"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/internal/control"
	"github.com/directord/directord/ipvs"
	"github.com/directord/directord/vrrp"
)

// The control socket's answers. They run on the server's goroutines and
// read what the daemon's loop publishes: the running configuration (an
// immutable *config.Config swapped whole on reload), the engine's and the
// checks' snapshots, the kernel's table. A reload goes through the loop.

// controlTimeout bounds how long a reload request waits for the loop.
const controlTimeout = 30 * time.Second

// startControl opens the control socket. New calls it before anything
// else touches the node, so a second directord started by mistake stops
// here, before it could remove the first one's addresses; Run serves it
// once everything it reports on exists.
func (d *Daemon) startControl() error {
	s, err := control.Listen(d.cfg.Node.ControlSocket, (*controlHandler)(d), d.log)
	if err != nil {
		return err
	}
	d.ctl = s
	return nil
}

// moveControl opens the socket at the reloaded configuration's path and
// closes the old one; if the new one cannot be opened, the old one stays.
func (d *Daemon) moveControl() {
	old := d.ctl
	if err := d.startControl(); err != nil {
		d.log.Error("control socket not moved; still serving the old one", "error", err)
		return
	}
	go d.ctl.Serve()
	if old != nil {
		old.Close()
	}
	d.log.Info("control socket moved", "socket", d.cfg.Node.ControlSocket)
}

func (d *Daemon) stopControl() {
	if d.ctl != nil {
		d.ctl.Close()
	}
}

// controlHandler is the Daemon as control.Handler.
type controlHandler Daemon

func (h *controlHandler) d() *Daemon { return (*Daemon)(h) }

func (h *controlHandler) Status() (control.Status, error) {
	d := h.d()
	cfg := d.running.Load()
	st := control.Status{Node: cfg.Node.Name, Config: cfg.File, Instances: []control.InstanceStatus{}}
	stats := map[string]vrrp.InstanceStats{}
	for _, s := range d.vrrp.Stats() {
		stats[s.Name] = s
	}
	d.histMu.Lock()
	defer d.histMu.Unlock()
	for _, in := range cfg.VRRP.Instances {
		s := stats[in.Name]
		is := control.InstanceStatus{
			Name: in.Name, Interface: in.Interface, VRID: in.VRID,
			State: s.State.String(), Priority: int(s.Priority), BasePriority: in.Priority,
			AdvertsSent: s.AdvertsSent, AdvertsRecv: s.AdvertsRecv, TransitionsN: s.Transitions,
			LastChangedAt: s.LastChangedAt, VIPs: []string{}, Transitions: []control.Transition{},
			MaxTimerLatenessMS: float64(s.MaxTimerLateness.Microseconds()) / 1000,
		}
		if s.Master.IsValid() {
			is.Master = s.Master.String()
		}
		for _, v := range in.VirtualAddresses {
			is.VIPs = append(is.VIPs, v.Address.String())
		}
		switch {
		case s.FaultReason != "":
			is.PriorityWhy = s.FaultReason
		case s.Priority == 0 && s.State == vrrp.StateInit:
			is.PriorityWhy = "not started"
		case int(s.Priority) != in.Priority:
			is.PriorityWhy = fmt.Sprintf("tracked objects adjust the configured %d by %+d", in.Priority, int(s.Priority)-in.Priority)
		default:
			is.PriorityWhy = "configured"
		}
		for _, tr := range d.history[in.Name] {
			is.Transitions = append(is.Transitions, controlTransition(tr))
		}
		st.Instances = append(st.Instances, is)
	}
	return st, nil
}

func controlTransition(tr vrrp.Transition) control.Transition {
	return control.Transition{At: tr.At, Instance: tr.Instance, From: tr.From.String(), To: tr.To.String(), Priority: int(tr.Priority), Reason: tr.Reason}
}

// IPVS lists the kernel's table, naming the services directord owns and
// each real server's health.
func (h *controlHandler) IPVS() (control.IPVSTable, error) {
	d := h.d()
	if d.ipvsKernel == nil {
		return control.IPVSTable{}, errors.New("this kernel has no IPVS and the configuration asks for none")
	}
	entries, err := d.ipvsKernel.Services()
	if err != nil {
		return control.IPVSTable{}, fmt.Errorf("read the IPVS table: %w", err)
	}
	cfg := d.running.Load()
	type owned struct {
		vs    *config.VirtualService
		sorry ipvs.DestKey
	}
	byKey := map[ipvs.ServiceKey]owned{}
	for _, ds := range ipvs.Desired(cfg, ipvs.AllUp{}).Services {
		for i := range cfg.IPVS.VirtualServices {
			vs := &cfg.IPVS.VirtualServices[i]
			if vs.Name != ds.Name {
				continue
			}
			o := owned{vs: vs}
			if vs.SorryServer != nil {
				o.sorry = ipvs.DestKey{Address: vs.SorryServer.Address.Addr.Unmap(), Port: vs.SorryServer.Address.Port}
				if !vs.SorryServer.Address.HasPort {
					o.sorry.Port = vs.Address.Port
				}
			}
			byKey[ds.Service.Key] = o
		}
	}
	t := control.IPVSTable{Services: []control.IPVSService{}}
	for _, e := range entries {
		s := control.IPVSService{Key: ipvsadmKey(e.Service.Key), Scheduler: e.Service.Scheduler, Flags: flagNames(e.Service), Stats: controlStats(e.Stats), Reals: []control.IPVSReal{}}
		if e.Service.Flags&ipvs.FlagPersistent != 0 {
			s.Persistence = int(e.Service.Timeout / time.Second)
			if full := 32; e.Service.NetmaskBits > 0 && e.Service.NetmaskBits != full && e.Service.NetmaskBits != 128 {
				s.Netmask = netip.PrefixFrom(netip.IPv4Unspecified(), e.Service.NetmaskBits).String()
			}
		}
		o, ok := byKey[e.Service.Key]
		if ok {
			s.Name = o.vs.Name
		}
		for _, de := range e.Destinations {
			r := control.IPVSReal{
				Address: de.Key.String(), Forward: de.Forward.String(), Weight: de.Weight,
				ActiveConns: de.ActiveConns, InactiveConns: de.InactiveConns, Stats: controlStats(de.Stats),
				Health: "unchecked",
			}
			switch {
			case !ok:
				r.Health = "not ours"
			case o.vs.SorryServer != nil && de.Key == o.sorry:
				r.Health = "sorry"
			default:
				if up, known, last := d.checks.Status(checkID(o.vs.Name, de.Key)); known || last.Reason != "" {
					r.Health, r.Reason = healthWord(up, known), last.Reason
				}
			}
			s.Reals = append(s.Reals, r)
		}
		t.Services = append(t.Services, s)
	}
	return t, nil
}

func healthWord(up, known bool) string {
	switch {
	case !known:
		return "unknown"
	case up:
		return "up"
	}
	return "down"
}

// ipvsadmKey writes a service key as ipvsadm -Ln does: "TCP  192.0.2.50:80",
// "FWM  7".
func ipvsadmKey(k ipvs.ServiceKey) string {
	if k.FWMark != 0 {
		if k.IPv6 {
			return fmt.Sprintf("FWM  %d IPv6", k.FWMark)
		}
		return fmt.Sprintf("FWM  %d", k.FWMark)
	}
	return fmt.Sprintf("%-4s %s", k.Protocol, netip.AddrPortFrom(k.Address, k.Port))
}

func flagNames(s ipvs.Service) []string {
	var f []string
	sh := s.Scheduler == "sh" || s.Scheduler == "mh"
	if s.Flags&ipvs.FlagOnePacket != 0 {
		f = append(f, "ops")
	}
	if sh && s.Flags&ipvs.FlagSchedSH1 != 0 {
		f = append(f, s.Scheduler+"-fallback")
	}
	if sh && s.Flags&ipvs.FlagSchedSH2 != 0 {
		f = append(f, s.Scheduler+"-port")
	}
	return f
}

func controlStats(s ipvs.Stats) control.Stats {
	return control.Stats{Conns: s.Conns, InPkts: s.InPkts, OutPkts: s.OutPkts, InBytes: s.InBytes, OutBytes: s.OutBytes,
		CPS: s.CPS, InPPS: s.InPPS, OutPPS: s.OutPPS, InBPS: s.InBPS, OutBPS: s.OutBPS}
}

// Conns lists the kernel's IPVS connections.
func (h *controlHandler) Conns() ([]control.Conn, error) {
	conns, err := ipvs.ReadConnections("/proc/net/ip_vs_conn")
	if err != nil {
		return nil, err
	}
	out := make([]control.Conn, 0, len(conns))
	for _, c := range conns {
		out = append(out, control.Conn{
			Protocol: c.Protocol, Client: c.Client.String(), Virtual: c.Virtual.String(),
			Destination: c.Dest.String(), State: c.State, ExpiresS: int(c.Expires / time.Second),
		})
	}
	return out, nil
}

// Health lists every configured check with its last result.
func (h *controlHandler) Health() (control.HealthReport, error) {
	d := h.d()
	cfg := d.running.Load()
	r := control.HealthReport{Checks: []control.Check{}}
	d.histMu.Lock()
	since := maps.Clone(d.checkSince)
	d.histMu.Unlock()
	for _, rc := range realChecks(cfg) {
		c := control.Check{Service: rc.service, Real: rc.key.String(), Type: rc.typ, State: "unchecked"}
		if rc.checked() {
			c.Target = netip.AddrPortFrom(rc.spec.Addr, rc.spec.Port).String()
			up, known, last := d.checks.Status(rc.spec.ID)
			c.State, c.Reason = healthWord(up, known), last.Reason
			c.LatencyMS = float64(last.Latency.Microseconds()) / 1000
			c.Since = since[rc.spec.ID]
		}
		r.Checks = append(r.Checks, c)
	}
	return r, nil
}

// Reload asks the loop for a reload and waits for its result.
func (h *controlHandler) Reload() error {
	d := h.d()
	reply := make(chan error, 1)
	select {
	case d.ctlReload <- reply:
	case <-time.After(controlTimeout):
		return errors.New("directord is busy: the reload was not taken within 30s")
	}
	select {
	case err := <-reply:
		return err
	case <-time.After(controlTimeout):
		return errors.New("the reload did not finish within 30s; see directord's log")
	}
}

func (h *controlHandler) Subscribe() (<-chan control.Event, func()) { return h.d().events.Subscribe() }
