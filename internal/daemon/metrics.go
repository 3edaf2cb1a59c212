package daemon

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/directord/directord/internal/config"
	"github.com/directord/directord/ipvs"
	connsync "github.com/directord/directord/sync"
	"github.com/directord/directord/vrrp"
)

// The Prometheus exposition on node.metrics_address. Values are read at
// scrape time from what the daemon already keeps: the engine's and the
// checks' snapshots, the managers' counters and the kernel's table, so a
// scrape costs nothing between scrapes and never holds up the loop.

// metricsServer is the running HTTP listener.
type metricsServer struct {
	addr string
	srv  *http.Server
}

// startMetrics listens on the configuration's metrics address, if any.
func (d *Daemon) startMetrics() error {
	addr := d.cfg.Node.MetricsAddress
	if addr == "" {
		return nil
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics listener: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister((*metricsCollector)(d), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorLog: slogPrinter{d}}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	d.metrics = &metricsServer{addr: addr, srv: srv}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			d.log.Error("metrics listener stopped", "error", err)
		}
	}()
	d.log.Info("metrics listening", "address", ln.Addr().String())
	return nil
}

func (d *Daemon) stopMetrics() {
	if d.metrics != nil {
		d.metrics.srv.Close()
		d.metrics = nil
	}
}

// reloadMetrics follows a changed metrics_address; if the new address
// cannot be bound the old listener stays and the error is logged.
func (d *Daemon) reloadMetrics(old *config.Config) {
	if old.Node.MetricsAddress == d.cfg.Node.MetricsAddress {
		return
	}
	prev := d.metrics
	d.metrics = nil
	if err := d.startMetrics(); err != nil {
		d.log.Error("metrics listener not moved; keeping the old one", "error", err)
		d.metrics = prev
		return
	}
	if prev != nil {
		prev.srv.Close()
	}
}

// refreshSyncSnap publishes the sync manager's status for scrapes; it
// runs on the loop, which owns the manager.
func (d *Daemon) refreshSyncSnap() {
	if d.syncRun == nil {
		d.syncSnap.Store(nil)
		return
	}
	st := d.syncRun.m.Status()
	d.syncSnap.Store(&st)
}

type slogPrinter struct{ d *Daemon }

func (p slogPrinter) Println(v ...any) { p.d.log.Error("metrics: " + fmt.Sprint(v...)) }

// metricsCollector is the Daemon as prometheus.Collector.
type metricsCollector Daemon

var (
	mVRRPState       = prometheus.NewDesc("directord_vrrp_state", "1 for the state each VRRP instance is in, 0 for the others.", []string{"instance", "state"}, nil)
	mVRRPPriority    = prometheus.NewDesc("directord_vrrp_priority", "Effective VRRP priority (configured, adjusted by tracking; 0 while faulted).", []string{"instance"}, nil)
	mVRRPBase        = prometheus.NewDesc("directord_vrrp_configured_priority", "Configured VRRP priority.", []string{"instance"}, nil)
	mVRRPTransitions = prometheus.NewDesc("directord_vrrp_transitions_total", "VRRP state transitions.", []string{"instance"}, nil)
	mVRRPSent        = prometheus.NewDesc("directord_vrrp_adverts_sent_total", "VRRP adverts sent.", []string{"instance"}, nil)
	mVRRPRecv        = prometheus.NewDesc("directord_vrrp_adverts_received_total", "VRRP adverts received and accepted.", []string{"instance"}, nil)
	mVRRPLateness    = prometheus.NewDesc("directord_vrrp_max_timer_lateness_seconds", "Largest delay between a VRRP timer's deadline and the timing thread acting on it.", []string{"instance"}, nil)
	mVRRPDropped     = prometheus.NewDesc("directord_vrrp_adverts_dropped_total", "VRRP adverts dropped, by reason.", []string{"reason"}, nil)
	mVIP             = prometheus.NewDesc("directord_vip_events_total", "Virtual address events: bound, released, readded (someone removed it), stale_removed, conflicts (another host answers for a held VIP), reclaimed (another host claimed one and let go: announced again), announcements, errors.", []string{"event"}, nil)
	mCheckUp         = prometheus.NewDesc("directord_check_up", "1 if the real server's check says up, 0 if down; absent while undecided.", []string{"service", "real"}, nil)
	mCheckLatency    = prometheus.NewDesc("directord_check_latency_seconds", "Latency of the check's last probe.", []string{"service", "real"}, nil)
	mIPVSOps         = prometheus.NewDesc("directord_ipvs_reconcile_operations_total", "IPVS operations the kernel accepted.", nil, nil)
	mIPVSErrors      = prometheus.NewDesc("directord_ipvs_reconcile_errors_total", "IPVS operations the kernel refused, and failed reads of the table.", nil, nil)
	mIPVSRepairs     = prometheus.NewDesc("directord_ipvs_repairs_total", "IPVS operations a resync applied because the table had drifted.", nil, nil)
	mIPVSScrapeErr   = prometheus.NewDesc("directord_ipvs_scrape_error", "1 if the IPVS table could not be read for this scrape.", nil, nil)
	svcLabels        = []string{"service", "name"}
	realLabels       = []string{"service", "name", "real"}
	mSvcConns        = prometheus.NewDesc("directord_ipvs_service_connections_total", "Connections scheduled by the virtual service.", svcLabels, nil)
	mSvcPkts         = prometheus.NewDesc("directord_ipvs_service_packets_total", "Packets of the virtual service, by direction.", append(svcLabels, "direction"), nil)
	mSvcBytes        = prometheus.NewDesc("directord_ipvs_service_bytes_total", "Bytes of the virtual service, by direction.", append(svcLabels, "direction"), nil)
	mRealConns       = prometheus.NewDesc("directord_ipvs_real_connections_total", "Connections scheduled to the real server.", realLabels, nil)
	mRealActive      = prometheus.NewDesc("directord_ipvs_real_active_connections", "Active connections of the real server.", realLabels, nil)
	mRealInactive    = prometheus.NewDesc("directord_ipvs_real_inactive_connections", "Inactive connections of the real server.", realLabels, nil)
	mRealWeight      = prometheus.NewDesc("directord_ipvs_real_weight", "Weight in the kernel (0: quiesced).", realLabels, nil)
	mRealBytes       = prometheus.NewDesc("directord_ipvs_real_bytes_total", "Bytes of the real server, by direction.", append(realLabels, "direction"), nil)
	mReloads         = prometheus.NewDesc("directord_reloads_total", "Configuration reloads, by result.", []string{"result"}, nil)
	mSyncRole        = prometheus.NewDesc("directord_sync_role", "1 for the kernel sync daemons' role (master, backup, both, none).", []string{"role"}, nil)
	mSyncDatagrams   = prometheus.NewDesc("directord_sync_relay_datagrams_total", "Sync datagrams relayed, by direction.", []string{"direction"}, nil)
	mSyncConns       = prometheus.NewDesc("directord_sync_relay_connections_total", "Connection entries relayed, by direction.", []string{"direction"}, nil)
	mSyncDropped     = prometheus.NewDesc("directord_sync_relay_dropped_total", "Relay datagrams dropped, by reason.", []string{"reason"}, nil)
	mSyncLag         = prometheus.NewDesc("directord_sync_relay_lag_seconds", "Age of the last relayed datagram when re-emitted.", nil, nil)
	mSyncResyncs     = prometheus.NewDesc("directord_sync_resyncs_total", "Full connection tables sent and received.", []string{"direction"}, nil)
	mSyncResyncSize  = prometheus.NewDesc("directord_sync_last_resync_connections", "Entries in the last full resync.", nil, nil)
	mSyncResyncTime  = prometheus.NewDesc("directord_sync_last_resync_duration_seconds", "Duration of the last full resync.", nil, nil)
)

// Describe sends nothing: the collector is unchecked, since the metrics
// it has depend on the running configuration.
func (c *metricsCollector) Describe(chan<- *prometheus.Desc) {}

func (c *metricsCollector) Collect(ch chan<- prometheus.Metric) {
	d := (*Daemon)(c)
	cfg := d.running.Load()
	counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(desc *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(desc, prometheus.GaugeValue, v, labels...)
	}

	base := map[string]int{}
	for _, in := range cfg.VRRP.Instances {
		base[in.Name] = in.Priority
	}
	for _, s := range d.vrrp.Stats() {
		for _, st := range []vrrp.State{vrrp.StateInit, vrrp.StateBackup, vrrp.StateMaster, vrrp.StateFault} {
			v := 0.0
			if s.State == st {
				v = 1
			}
			gauge(mVRRPState, v, s.Name, st.String())
		}
		gauge(mVRRPPriority, float64(s.Priority), s.Name)
		gauge(mVRRPBase, float64(base[s.Name]), s.Name)
		counter(mVRRPTransitions, s.Transitions, s.Name)
		counter(mVRRPSent, s.AdvertsSent, s.Name)
		counter(mVRRPRecv, s.AdvertsRecv, s.Name)
		gauge(mVRRPLateness, s.MaxTimerLateness.Seconds(), s.Name)
	}
	for r, n := range d.vrrp.Drops() {
		counter(mVRRPDropped, n, r.String())
	}
	vs := d.vips.Stats()
	for _, e := range []struct {
		name string
		v    uint64
	}{{"bound", vs.Bound}, {"released", vs.Released}, {"readded", vs.Readded}, {"stale_removed", vs.StaleRemoved},
		{"conflicts", vs.Conflicts}, {"reclaimed", vs.Reclaimed}, {"announcements", vs.Announcements}, {"errors", vs.Errors}} {
		counter(mVIP, e.v, e.name)
	}

	for _, rc := range realChecks(cfg) {
		if !rc.checked() {
			continue
		}
		up, known, last := d.checks.Status(rc.spec.ID)
		if known {
			b := 0.0
			if up {
				b = 1
			}
			gauge(mCheckUp, b, rc.service, rc.key.String())
		}
		if last.Reason != "" {
			gauge(mCheckLatency, last.Latency.Seconds(), rc.service, rc.key.String())
		}
	}

	if d.ipvs != nil {
		n := d.ipvs.Counters()
		counter(mIPVSOps, n.OpsApplied)
		counter(mIPVSErrors, n.OpErrors)
		counter(mIPVSRepairs, n.Repairs)
	}
	if d.ipvsKernel != nil {
		c.collectIPVS(ch, cfg)
	}
	counter(mReloads, d.reloadsOK.Load(), "ok")
	counter(mReloads, d.reloadsFailed.Load(), "rejected")

	if st := d.syncSnap.Load(); st != nil {
		for _, r := range []connsync.Role{connsync.RoleBoth, connsync.RoleMaster, connsync.RoleBackup} {
			v := 0.0
			if st.Daemons.Role == r {
				v = 1
			}
			gauge(mSyncRole, v, r.String())
		}
		if rs := st.Relay; rs != nil {
			counter(mSyncDatagrams, rs.DatagramsSent, "sent")
			counter(mSyncDatagrams, rs.DatagramsReceived, "received")
			counter(mSyncConns, rs.ConnsSent, "sent")
			counter(mSyncConns, rs.ConnsReceived, "received")
			for r, n := range rs.Dropped {
				counter(mSyncDropped, n, string(r))
			}
			gauge(mSyncLag, rs.Lag.Seconds())
			counter(mSyncResyncs, rs.ResyncsSent, "sent")
			counter(mSyncResyncs, rs.ResyncsReceived, "received")
			gauge(mSyncResyncSize, float64(rs.LastResyncConns))
			gauge(mSyncResyncTime, rs.LastResyncDuration.Seconds())
		}
	}
}

func (c *metricsCollector) collectIPVS(ch chan<- prometheus.Metric, cfg *config.Config) {
	d := (*Daemon)(c)
	entries, err := d.ipvsKernel.Services()
	failed := 0.0
	if err != nil {
		failed = 1
	}
	ch <- prometheus.MustNewConstMetric(mIPVSScrapeErr, prometheus.GaugeValue, failed)
	if err != nil {
		return
	}
	names := map[ipvs.ServiceKey]string{}
	for _, ds := range ipvs.Desired(cfg, ipvs.AllUp{}).Services {
		names[ds.Service.Key] = ds.Name
	}
	for _, e := range entries {
		key, name := e.Service.Key.String(), names[e.Service.Key]
		counter := func(desc *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(desc, prometheus.CounterValue, float64(v), labels...)
		}
		counter(mSvcConns, e.Stats.Conns, key, name)
		counter(mSvcPkts, e.Stats.InPkts, key, name, "in")
		counter(mSvcPkts, e.Stats.OutPkts, key, name, "out")
		counter(mSvcBytes, e.Stats.InBytes, key, name, "in")
		counter(mSvcBytes, e.Stats.OutBytes, key, name, "out")
		for _, de := range e.Destinations {
			real := de.Key.String()
			counter(mRealConns, de.Stats.Conns, key, name, real)
			counter(mRealBytes, de.Stats.InBytes, key, name, real, "in")
			counter(mRealBytes, de.Stats.OutBytes, key, name, real, "out")
			ch <- prometheus.MustNewConstMetric(mRealActive, prometheus.GaugeValue, float64(de.ActiveConns), key, name, real)
			ch <- prometheus.MustNewConstMetric(mRealInactive, prometheus.GaugeValue, float64(de.InactiveConns), key, name, real)
			ch <- prometheus.MustNewConstMetric(mRealWeight, prometheus.GaugeValue, float64(de.Weight), key, name, real)
		}
	}
}
