// Package vrrp implements the Virtual Router Redundancy Protocol (RFC 5798,
// and RFC 3768 for VRRPv2 interop): the packet codec, a pure state machine
// driven by events and an injected clock, the socket transport, instances,
// sync groups and tracking. It decides which director is MASTER.
package vrrp
