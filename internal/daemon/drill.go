package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"time"

	"github.com/mdlayher/arp"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/internal/control"
	"github.com/directord/directord/vrrp"
)

// Drill hands instance over to the peer (vrrp.Engine.Handover) and
// measures, from this node: the peer's first advert as master, and the
// first ARP answer for the instance's first IPv4 VIP from another host.
// With ret it then takes mastership back and measures until MASTER.
// Without ret the instance stays held at priority 1 until a drill with
// ret (or a restart) ends the hold.
func (h *controlHandler) Drill(name string, ret bool) (control.DrillReport, error) {
	d := h.d()
	cfg := d.running.Load()
	var inCfg *config.Instance
	for i := range cfg.VRRP.Instances {
		if cfg.VRRP.Instances[i].Name == name {
			inCfg = &cfg.VRRP.Instances[i]
		}
	}
	if inCfg == nil {
		return control.DrillReport{}, fmt.Errorf("no VRRP instance %q in %s", name, cfg.File)
	}
	rep := control.DrillReport{Node: cfg.Node.Name, Instance: name, AdvertInterval: inCfg.AdvertInterval.String(),
		PeerAdvertMS: -1, VIPAnswerMS: -1, TakeBackMS: -1}
	limit := 10*inCfg.AdvertInterval + 3*time.Second
	t0 := time.Now()
	rep.Started = t0
	ms := func(t time.Time) float64 { return float64(t.Sub(t0).Microseconds()) / 1000 }
	step := func(t time.Time, what string) {
		rep.Steps = append(rep.Steps, control.DrillStep{AtMS: ms(t), What: what})
	}

	st, ok := d.instanceStats(name)
	held := ok && st.DrillHold
	if !(held && ret) {
		if err := d.vrrp.Handover(name); err != nil {
			return rep, err
		}
		step(t0, "priority-0 advert sent and VIPs released; this node BACKUP, held at priority 1")
		if st, ok := d.waitInstance(name, t0.Add(limit), func(s vrrp.InstanceStats) bool { return !s.DrillPeerAdvertAt.IsZero() }); ok {
			rep.PeerAdvertMS = ms(st.DrillPeerAdvertAt)
			step(st.DrillPeerAdvertAt, fmt.Sprintf("first advert from %s as master", st.DrillPeer))
		} else {
			step(time.Now(), fmt.Sprintf("no advert from a peer within %v", limit))
		}
		if v := firstIPv4VIP(inCfg); v.IsValid() {
			at, mac, err := vipAnswer(inCfg.Interface, v, t0.Add(limit))
			switch {
			case err != nil:
				step(time.Now(), fmt.Sprintf("%s: no ARP answer from another host: %v", v, err))
			default:
				rep.VIPAnswerMS = ms(at)
				step(at, fmt.Sprintf("%s answers ARP from %s", v, mac))
			}
		}
	}
	if ret {
		back := time.Now()
		if err := d.vrrp.TakeBack(name); err != nil {
			return rep, err
		}
		step(back, "hold ended: back to the configured priority")
		if _, ok := d.waitInstance(name, back.Add(limit), func(s vrrp.InstanceStats) bool { return s.State == vrrp.StateMaster }); ok {
			now := time.Now()
			rep.TakeBackMS = ms(now)
			step(now, "MASTER again")
		} else {
			step(time.Now(), fmt.Sprintf("not MASTER again within %v (preempt off?)", limit))
		}
	} else {
		step(time.Now(), "held at priority 1: `directorctl drill "+name+" --return` takes mastership back")
	}
	return rep, nil
}

func (d *Daemon) instanceStats(name string) (vrrp.InstanceStats, bool) {
	for _, s := range d.vrrp.Stats() {
		if s.Name == name {
			return s, true
		}
	}
	return vrrp.InstanceStats{}, false
}

// waitInstance polls the instance's stats every millisecond until ok
// accepts them or the deadline passes.
func (d *Daemon) waitInstance(name string, deadline time.Time, ok func(vrrp.InstanceStats) bool) (vrrp.InstanceStats, bool) {
	for {
		st, _ := d.instanceStats(name)
		if ok(st) {
			return st, true
		}
		if time.Now().After(deadline) {
			return st, false
		}
		time.Sleep(time.Millisecond)
	}
}

func firstIPv4VIP(in *config.Instance) netip.Addr {
	for _, v := range in.VirtualAddresses {
		if a := v.Address.Addr(); a.Is4() {
			return a
		}
	}
	return netip.Addr{}
}

// vipAnswer asks for vip on the interface every 5 ms until another host
// answers, and returns when and with which MAC.
func vipAnswer(ifname string, vip netip.Addr, deadline time.Time) (time.Time, net.HardwareAddr, error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return time.Time{}, nil, err
	}
	c, err := arp.Dial(ifi)
	if err != nil {
		return time.Time{}, nil, err
	}
	defer c.Close()
	for time.Now().Before(deadline) {
		if err := c.Request(vip); err != nil {
			return time.Time{}, nil, err
		}
		next := time.Now().Add(5 * time.Millisecond)
		for {
			_ = c.SetReadDeadline(next)
			p, _, err := c.Read()
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break
				}
				continue
			}
			if p.Operation == arp.OperationReply && p.SenderIP == vip && p.SenderHardwareAddr.String() != ifi.HardwareAddr.String() {
				return time.Now(), p.SenderHardwareAddr, nil
			}
		}
	}
	return time.Time{}, nil, errors.New("timed out")
}
