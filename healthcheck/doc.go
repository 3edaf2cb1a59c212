// Package healthcheck probes real servers (tcp, http, https, udp, dns, exec)
// on a jittered schedule with rise/fall hysteresis and reports transitions
// with their reasons, which drive the IPVS table and VRRP tracking.
package healthcheck
