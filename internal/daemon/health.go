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

// realCheck is one configured real server and its check.
type realCheck struct {
	service string
	key     ipvs.DestKey
	typ     string
	// spec is the check to run; zero when typ is none.
	spec healthcheck.Spec
}

func (rc realCheck) checked() bool { return rc.typ != "none" }

// realChecks lists every real server of the configuration, in order, with
// its check. The probe goes to check.port, else the real server's port,
// else the service's.
func realChecks(cfg *config.Config) []realCheck {
	var out []realCheck
	for i := range cfg.IPVS.VirtualServices {
		vs := &cfg.IPVS.VirtualServices[i]
		for j := range vs.RealServers {
			rs := &vs.RealServers[j]
			k := ipvs.RealKey(vs, rs)
			rc := realCheck{service: vs.Name, key: k, typ: rs.Check.Type}
			if rc.checked() {
				port := uint16(rs.Check.Port)
				if port == 0 {
					port = k.Port
				}
				rc.spec = healthcheck.Spec{ID: checkID(vs.Name, k), Check: rs.Check, Addr: k.Address, Port: port}
			}
			out = append(out, rc)
		}
	}
	return out
}

// checkSpecs lists the checks the configuration asks for: one per real
// server whose check type is not none.
func checkSpecs(cfg *config.Config) []healthcheck.Spec {
	var specs []healthcheck.Spec
	for _, rc := range realChecks(cfg) {
		if rc.checked() {
			specs = append(specs, rc.spec)
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
