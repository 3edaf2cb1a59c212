package vrrp

import (
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// realtime gives the calling thread (locked by the caller) SCHED_FIFO at
// node.vrrp_rt_priority. SCHED_FLAG_RESET_ON_FORK keeps the policy from
// passing to anything this thread might start. Where the system refuses
// (no CAP_SYS_NICE, no RLIMIT_RTPRIO, a cgroup without real-time budget)
// the engine says so once and runs under the normal scheduler.
func (e *Engine) realtime() {
	if e.rtPrio <= 0 {
		e.log.Info("VRRP timing thread runs under the normal scheduler (node.vrrp_rt_priority: 0); a loaded host can delay adverts and cause spurious takeovers")
		return
	}
	attr := unix.SchedAttr{
		Size:     unix.SizeofSchedAttr,
		Policy:   unix.SCHED_FIFO,
		Flags:    unix.SCHED_FLAG_RESET_ON_FORK,
		Priority: uint32(e.rtPrio),
	}
	err := unix.SchedSetAttr(0, &attr, 0)
	if err == unix.ENOSYS {
		// Kernels before 3.14: the older call, same meaning.
		prio := int32(e.rtPrio)
		_, _, errno := unix.RawSyscall(unix.SYS_SCHED_SETSCHEDULER, 0, unix.SCHED_FIFO|unix.SCHED_RESET_ON_FORK, uintptr(unsafe.Pointer(&prio)))
		err = nil
		if errno != 0 {
			err = errno
		}
	}
	if err != nil {
		msg := fmt.Sprintf("cannot run the VRRP timing thread real-time (SCHED_FIFO %d): %v", e.rtPrio, err)
		e.log.Warn(msg+"; it runs under the normal scheduler, and a loaded host can delay adverts and cause spurious takeovers (grant CAP_SYS_NICE, or set node.vrrp_rt_priority: 0 to silence this)",
			"vrrp_rt_priority", e.rtPrio, "error", err)
		e.problem(msg)
		return
	}
	e.mu.Lock()
	e.sched.RealtimePriority = e.rtPrio
	e.mu.Unlock()
	e.log.Info("VRRP timing thread runs real-time", "policy", "SCHED_FIFO", "priority", e.rtPrio)
}

// lockMemory locks every page of the process, now and later (mlockall),
// when node.lock_memory asks for it, so that no page fault (of the heap,
// a stack, the binary's text) can stall the timing loop.
//
// MCL_ONFAULT locks pages as they are first touched instead of faulting
// every mapped page in: without it the Go runtime's heap arena and
// reservations would be populated and locked whole (about 140 MB resident
// for an idle daemon instead of 15 MB). A touched page stays resident, so
// no later fault has to wait for I/O.
//
// MCL_FUTURE makes every later mapping of the Go runtime count against
// RLIMIT_MEMLOCK; past the limit such a mapping fails and the runtime
// dies. So memory is only locked when the limit cannot bite: with
// CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK.
func (e *Engine) lockMemory() {
	if !e.lockMem {
		return
	}
	var lim unix.Rlimit
	unlimited := unix.Getrlimit(unix.RLIMIT_MEMLOCK, &lim) == nil && lim.Cur == unix.RLIM_INFINITY
	if !unlimited && !hasCapability(unix.CAP_IPC_LOCK) {
		msg := "cannot lock memory: neither CAP_IPC_LOCK nor an unlimited RLIMIT_MEMLOCK"
		e.log.Warn(msg+"; a page fault can delay adverts (grant CAP_IPC_LOCK, or set node.lock_memory: false to silence this)", "memlock_limit", lim.Cur)
		e.problem(msg)
		return
	}
	if err := unix.Mlockall(unix.MCL_CURRENT | unix.MCL_FUTURE | unix.MCL_ONFAULT); err != nil {
		msg := fmt.Sprintf("cannot lock memory (mlockall): %v", err)
		e.log.Warn(msg+"; a page fault can delay adverts", "error", err)
		e.problem(msg)
		return
	}
	e.mu.Lock()
	e.sched.MemoryLocked = true
	e.mu.Unlock()
	e.log.Info("memory locked (mlockall)")
}

func (e *Engine) problem(msg string) {
	e.mu.Lock()
	e.sched.Problems = append(e.sched.Problems, msg)
	e.mu.Unlock()
}

// hasCapability reports whether capability c is in the effective set.
func hasCapability(c int) bool {
	hdr := unix.CapUserHeader{Version: unix.LINUX_CAPABILITY_VERSION_3}
	var data [2]unix.CapUserData
	if err := unix.Capget(&hdr, &data[0]); err != nil {
		return false
	}
	return data[c/32].Effective&(1<<(uint(c)%32)) != 0
}
