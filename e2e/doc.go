// Package e2e is the end-to-end lab: a director pair with a VIP, DR and NAT
// services, real HTTP servers and a load client, built in network
// namespaces, and the failover drills run against it under load, with
// directord and, as the reference, keepalived with its lvs_sync_daemon.
//
// The lab needs a kernel with IPVS, so its tests are guest tests
// (TestGuest*, build tag vmguest) that the host tests boot in the qemu
// guest of internal/vmtest:
//
//   - TestVM (the VM test tier, CI): the demo and the short drill set
//     (master SIGKILL, master SIGTERM, a real server dies and returns, VRRP
//     partition and heal) against bounds relative to the advert interval.
//   - TestVM with DIRECTORD_E2E=demo (make demo): the demo alone, printed
//     for a terminal.
//   - BenchmarkVMDrill (make drill): every scenario with directord and
//     keepalived in one run, printed as one table.
//
// On a host whose own kernel has IPVS, the guest tests run there directly
// (go test -tags vmguest, as root; DIRECTORD_E2E_BIN names the directory
// holding directord and directorctl).
package e2e
