// Package vip binds virtual addresses (/32, /128) through netlink and
// announces them with gratuitous ARP and unsolicited neighbour
// advertisements, the job send_arp used to do after a takeover.
//
// A Manager holds addresses for owners (VRRP instances): Acquire binds an
// owner's set all or nothing and runs its announcement schedule (a burst, a
// second burst after master_delay, a periodic refresh); Release unbinds.
// While an address is held a netlink watch binds it again if someone
// removes it, and the announcement sockets listen for other hosts claiming
// it. A claim that outlives a grace is checked with a probe: a host that
// still answers is a conflict, reported; one that let go (a healed split
// brain whose step-down was lost) leaves hosts with its MAC, so the
// address is announced again. A state file lists what is bound, so the next start after
// a crash removes addresses this node no longer owns.
//
// Frames are built whole and sent on AF_PACKET sockets, one pair per
// interface, so an interface without an IPv4 address of its own works.
package vip
