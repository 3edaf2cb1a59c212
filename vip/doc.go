// Package vip binds virtual addresses (/32, /128) through netlink and
// announces them with gratuitous ARP and unsolicited neighbour
// advertisements, the job send_arp used to do after a takeover.
package vip
