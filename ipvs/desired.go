package ipvs

import (
	"github.com/directord/directord/internal/config"
)

// Table is the desired IPVS table: what the configuration and the health of
// the real servers ask the kernel to hold.
type Table struct {
	// Services are in configuration order.
	Services []DesiredService
	// Timeouts are the global connection timeouts; a zero field leaves the
	// kernel's value alone.
	Timeouts config.Timeouts
}

// DesiredService is one virtual service of the desired table.
type DesiredService struct {
	// Name is the service's name in the configuration.
	Name    string
	Service Service
	// Destinations are in configuration order: the real servers, or the
	// sorry server alone while no real server is up.
	Destinations []Destination
}

// RealStatus is what the health checks say about one real server.
type RealStatus struct {
	Up bool
	// Weight replaces the configured weight when WeightSet: an exec check
	// with dynamic_weight reported it (keepalived misc_dynamic).
	Weight    int
	WeightSet bool
}

// Health answers, per real server, what its checks last concluded. The
// daemon implements it over the health-check scheduler.
type Health interface {
	// Real reports the status of the real server dest of the virtual
	// service named service. A real server not checked yet is up: traffic
	// flows from the start, as with keepalived.
	Real(service string, dest DestKey) RealStatus
}

// AllUp is the Health of a director whose checks have not run: every real
// server is up at its configured weight.
type AllUp struct{}

// Real reports every real server up.
func (AllUp) Real(string, DestKey) RealStatus { return RealStatus{Up: true} }

// Desired computes the IPVS table that cfg asks for, given the real
// servers' health. A real server that is down is left out (on_failure:
// remove) or kept at weight 0 so its existing connections finish (on_failure:
// quiesce). While no real server of a service is up, its sorry server, if it
// has one, is its only destination. Real servers with check type none are
// always up.
func Desired(cfg *config.Config, health Health) Table {
	if health == nil {
		health = AllUp{}
	}
	t := Table{Timeouts: cfg.IPVS.Timeouts}
	for i := range cfg.IPVS.VirtualServices {
		vs := &cfg.IPVS.VirtualServices[i]
		ds := DesiredService{Name: vs.Name, Service: serviceOf(vs)}
		anyUp := false
		for j := range vs.RealServers {
			rs := &vs.RealServers[j]
			d := destinationOf(vs, rs.Address, rs.Forwarding)
			d.Weight = rs.Weight
			// Validation makes sure a lower threshold comes with an upper
			// one: the kernel refuses lower > upper even when upper is 0.
			d.UpperThreshold = uint32(rs.UpperThreshold)
			d.LowerThreshold = uint32(rs.LowerThreshold)
			st := realStatus(health, vs, rs, d.Key)
			if st.WeightSet {
				d.Weight = st.Weight
			}
			if !st.Up {
				if vs.OnFailure != "quiesce" {
					continue
				}
				d.Weight = 0
			}
			anyUp = anyUp || st.Up
			ds.Destinations = append(ds.Destinations, d)
		}
		if !anyUp && vs.SorryServer != nil {
			d := destinationOf(vs, vs.SorryServer.Address, vs.SorryServer.Forwarding)
			d.Weight = 1
			ds.Destinations = []Destination{d}
		}
		t.Services = append(t.Services, ds)
	}
	return t
}

// Quorum reports, per virtual service name, whether the summed weight of
// its healthy real servers reaches its quorum (what VRRP track.services
// follows). A sorry server does not count.
func Quorum(cfg *config.Config, health Health) map[string]bool {
	if health == nil {
		health = AllUp{}
	}
	q := make(map[string]bool, len(cfg.IPVS.VirtualServices))
	for i := range cfg.IPVS.VirtualServices {
		vs := &cfg.IPVS.VirtualServices[i]
		sum := 0
		for j := range vs.RealServers {
			rs := &vs.RealServers[j]
			st := realStatus(health, vs, rs, realKey(vs, rs.Address))
			if !st.Up {
				continue
			}
			if st.WeightSet {
				sum += st.Weight
			} else {
				sum += rs.Weight
			}
		}
		q[vs.Name] = sum >= vs.Quorum
	}
	return q
}

// realStatus asks health about a real server, except where the
// configuration makes the answer certain: an unchecked server is always up,
// and only a dynamic_weight check may change its weight.
func realStatus(h Health, vs *config.VirtualService, rs *config.RealServer, k DestKey) RealStatus {
	if rs.Check.Type == "none" {
		return RealStatus{Up: true}
	}
	st := h.Real(vs.Name, k)
	if !rs.Check.DynamicWeight {
		st.Weight, st.WeightSet = 0, false
	}
	return st
}

func serviceOf(vs *config.VirtualService) Service {
	s := Service{Scheduler: vs.Scheduler, NetmaskBits: fullBits(vs.IPv6())}
	if vs.FWMark > 0 {
		s.Key = ServiceKey{FWMark: vs.FWMark, IPv6: vs.IPv6()}
	} else {
		s.Key = ServiceKey{Protocol: protocolOf(vs.Protocol), Address: vs.Address.Addr, Port: vs.Address.Port}
	}
	s.Key = s.Key.canonical()
	if p := vs.Persistence; p.Timeout > 0 {
		s.Flags |= FlagPersistent
		s.Timeout = p.Timeout
		if p.Netmask != "" {
			// Validation has accepted the mask; an error cannot happen
			// here, and the full length (one client) is the safe reading.
			if bits, err := config.PersistenceBits(p.Netmask, vs.IPv6()); err == nil {
				s.NetmaskBits = bits
			}
		}
	}
	if vs.OnePacket {
		s.Flags |= FlagOnePacket
	}
	for _, f := range vs.SchedulerFlags {
		switch f {
		case "sh-fallback", "mh-fallback":
			s.Flags |= FlagSchedSH1
		case "sh-port", "mh-port":
			s.Flags |= FlagSchedSH2
		}
	}
	return s
}

func protocolOf(p string) Protocol {
	switch p {
	case "udp":
		return UDP
	case "sctp":
		return SCTP
	}
	return TCP
}

func fullBits(v6 bool) int {
	if v6 {
		return 128
	}
	return 32
}

// realKey is a real (or sorry) server's key: a missing port is the
// service's (0 for firewall-mark services).
func realKey(vs *config.VirtualService, ep config.Endpoint) DestKey {
	k := DestKey{Address: ep.Addr.Unmap(), Port: ep.Port}
	if !ep.HasPort {
		k.Port = vs.Address.Port
	}
	return k
}

// RealKey is the destination key of a configured real server: its address,
// and its port or, when it has none, the service's.
func RealKey(vs *config.VirtualService, rs *config.RealServer) DestKey {
	return realKey(vs, rs.Address)
}

func destinationOf(vs *config.VirtualService, ep config.Endpoint, forwarding string) Destination {
	d := Destination{Key: realKey(vs, ep), TunnelType: TunnelIPIP}
	if forwarding == "" {
		forwarding = vs.Forwarding
	}
	switch forwarding {
	case "nat":
		d.Forward = Masq
	case "tun":
		d.Forward = Tunnel
	default:
		d.Forward = Route
	}
	return d
}
