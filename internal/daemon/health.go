package daemon

import (
	"github.com/directord/directord/healthcheck"
	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/ipvs"
)

// health is what the checks last concluded, per check ID. A real server
// whose check has not decided yet is up, so traffic flows from the start
// (keepalived without alpha); a failing one leaves after `fall` probes.
type health map[string]healthcheck.Transition

func checkID(service string, k ipvs.DestKey) string { return service + " " + k.String() }

// Real implements ipvs.Health.
func (h health) Real(service string, dest ipvs.DestKey) ipvs.RealStatus {
	t, ok := h[checkID(service, dest)]
	if !ok {
		return ipvs.RealStatus{Up: true}
	}
	return ipvs.RealStatus{Up: t.Up, Weight: t.Weight, WeightSet: t.WeightSet}
}

// checkSpecs lists the checks the configuration asks for: one per real
// server whose check type is not none. The probe goes to check.port, else
// the real server's port, else the service's.
func checkSpecs(cfg *config.Config) []healthcheck.Spec {
	var specs []healthcheck.Spec
	for i := range cfg.IPVS.VirtualServices {
		vs := &cfg.IPVS.VirtualServices[i]
		for j := range vs.RealServers {
			rs := &vs.RealServers[j]
			if rs.Check.Type == "none" {
				continue
			}
			k := ipvs.RealKey(vs, rs)
			port := uint16(rs.Check.Port)
			if port == 0 {
				port = k.Port
			}
			specs = append(specs, healthcheck.Spec{ID: checkID(vs.Name, k), Check: rs.Check, Addr: k.Address, Port: port})
		}
	}
	return specs
}

// prune forgets checks that are no longer configured.
func (h health) prune(specs []healthcheck.Spec) {
	keep := map[string]bool{}
	for _, s := range specs {
		keep[s.ID] = true
	}
	for id := range h {
		if !keep[id] {
			delete(h, id)
		}
	}
}
