// Package sync drives the kernel's IPVS connection-sync daemon, decodes its
// v0/v1 messages, relays them over authenticated unicast where multicast is
// blocked, and resends the full connection table to a recovered peer.
package sync
