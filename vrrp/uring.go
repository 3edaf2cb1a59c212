package vrrp

import (
	"errors"
	"fmt"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ring is the smallest io_uring the advert timer needs (see timer.go): an
// engine queues "wait until T, then send this advert" as a timeout linked
// to a sendmsg, and the kernel sends the advert at T whatever the Go
// runtime is doing with the engine's thread then.
//
// Only the engine's loop uses it, from its own locked thread: the kernel
// runs a linked request's work in the context of the thread that submitted
// it, and that thread is the real-time one.
type ring struct {
	fd   int
	mem  []byte // submission and completion rings (one mapping)
	sqem []byte // submission queue entries

	sqHead, sqTail *uint32
	sqMask         uint32
	sqEntries      uint32
	sqArray        unsafe.Pointer
	sqes           unsafe.Pointer
	queued         uint32 // entries written since the last submit

	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           unsafe.Pointer
}

// The kernel's io_uring ABI (include/uapi/linux/io_uring.h), the part used.
const (
	opNop           = 0
	opSendmsg       = 9
	opTimeout       = 11
	opTimeoutRemove = 12

	sqeIOLink = 1 << 2 // IOSQE_IO_LINK

	timeoutAbs          = 1 << 0 // IORING_TIMEOUT_ABS (CLOCK_MONOTONIC)
	timeoutETimeSuccess = 1 << 5 // IORING_TIMEOUT_ETIME_SUCCESS (5.16)

	setupCQSize = 1 << 3 // IORING_SETUP_CQSIZE

	featSingleMmap = 1 << 0 // IORING_FEAT_SINGLE_MMAP (5.4)
	featNoDrop     = 1 << 1 // IORING_FEAT_NODROP (5.5)

	enterGetEvents = 1 << 0

	offSQRing = 0
	offSQEs   = 0x10000000

	sizeofSQE = 64
	sizeofCQE = 16
)

type sqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Flags, Dropped, Array, Resv1 uint32
	UserAddr                                                        uint64
}

type cqringOffsets struct {
	Head, Tail, RingMask, RingEntries, Overflow, Cqes, Flags, Resv1 uint32
	UserAddr                                                        uint64
}

type uringParams struct {
	SQEntries, CQEntries, Flags, SQThreadCPU, SQThreadIdle, Features, WQFd uint32
	Resv                                                                   [3]uint32
	SQOff                                                                  sqringOffsets
	CQOff                                                                  cqringOffsets
}

// sqe is struct io_uring_sqe.
type sqe struct {
	Opcode      uint8
	Flags       uint8
	Ioprio      uint16
	Fd          int32
	Off         uint64
	Addr        uint64
	Len         uint32
	OpFlags     uint32
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	SpliceFdIn  int32
	Addr3       uint64
	pad         uint64
}

// cqe is struct io_uring_cqe.
type cqe struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// kernelTimespec is struct __kernel_timespec (64-bit fields everywhere).
type kernelTimespec struct {
	Sec, Nsec int64
}

var (
	_ = [1]struct{}{}[unsafe.Sizeof(sqe{})-sizeofSQE]
	_ = [1]struct{}{}[unsafe.Sizeof(cqe{})-sizeofCQE]
	_ = [1]struct{}{}[unsafe.Sizeof(uringParams{})-120]
)

// newRing sets up a ring with sq submission and cq completion entries and
// proves that the kernel runs a send linked to an expired timeout (what
// the advert timer relies on); it fails on kernels older than 5.16, where
// io_uring is switched off (kernel.io_uring_disabled) or filtered out
// (seccomp), saying why.
func newRing(sq, cq uint32) (*ring, error) {
	p := uringParams{Flags: setupCQSize, CQEntries: cq}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(sq), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("io_uring_setup: %w", errno)
	}
	r := &ring{fd: int(fd)}
	if p.Features&featSingleMmap == 0 || p.Features&featNoDrop == 0 {
		r.close()
		return nil, errors.New("io_uring of this kernel is too old (no single mapping or no overflow protection)")
	}
	size := max(p.SQOff.Array+p.SQEntries*4, p.CQOff.Cqes+p.CQEntries*sizeofCQE)
	mem, err := unix.Mmap(r.fd, offSQRing, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("map io_uring: %w", err)
	}
	r.mem = mem
	sqem, err := unix.Mmap(r.fd, offSQEs, int(p.SQEntries*sizeofSQE), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		r.close()
		return nil, fmt.Errorf("map io_uring entries: %w", err)
	}
	r.sqem = sqem
	base := unsafe.Pointer(&mem[0])
	r.sqHead = (*uint32)(unsafe.Add(base, p.SQOff.Head))
	r.sqTail = (*uint32)(unsafe.Add(base, p.SQOff.Tail))
	r.sqMask = *(*uint32)(unsafe.Add(base, p.SQOff.RingMask))
	r.sqEntries = p.SQEntries
	r.sqArray = unsafe.Add(base, p.SQOff.Array)
	r.sqes = unsafe.Pointer(&sqem[0])
	r.cqHead = (*uint32)(unsafe.Add(base, p.CQOff.Head))
	r.cqTail = (*uint32)(unsafe.Add(base, p.CQOff.Tail))
	r.cqMask = *(*uint32)(unsafe.Add(base, p.CQOff.RingMask))
	r.cqes = unsafe.Add(base, p.CQOff.Cqes)
	if err := r.probe(); err != nil {
		r.close()
		return nil, err
	}
	return r, nil
}

// probe queues a timeout already due, linked to a no-op, and waits for
// both: the no-op must run (res 0), not be cancelled as the link of a
// failed request (kernels without IORING_TIMEOUT_ETIME_SUCCESS).
func (r *ring) probe() error {
	ts := kernelTimespec{Nsec: 1000}
	t := r.next()
	*t = sqe{Opcode: opTimeout, Flags: sqeIOLink, Addr: uint64(uintptr(unsafe.Pointer(&ts))), Len: 1, OpFlags: timeoutETimeSuccess, UserData: 1}
	n := r.next()
	*n = sqe{Opcode: opNop, UserData: 2}
	if err := r.submit(2); err != nil {
		return err
	}
	var nop, tmo int32 = 1, 1
	for got := 0; got < 2; {
		r.reap(func(c cqe) {
			switch c.UserData {
			case 1:
				tmo = c.Res
			case 2:
				nop = c.Res
			}
			got++
		})
	}
	if nop != 0 {
		return fmt.Errorf("io_uring of this kernel does not run a request linked to an expired timeout (timeout %v, linked request %v)", unix.Errno(-tmo), unix.Errno(-nop))
	}
	return nil
}

// next returns the next free submission entry, submitting what is queued
// when the queue is full. The caller fills it in whole.
func (r *ring) next() *sqe {
	tail := *r.sqTail + r.queued
	if tail-atomic.LoadUint32(r.sqHead) >= r.sqEntries {
		_ = r.submit(0)
		tail = *r.sqTail + r.queued
	}
	i := tail & r.sqMask
	*(*uint32)(unsafe.Add(r.sqArray, 4*uintptr(i))) = i
	r.queued++
	return (*sqe)(unsafe.Add(r.sqes, sizeofSQE*uintptr(i)))
}

// submit hands the queued entries to the kernel; with wait > 0 it also
// waits for that many completions.
func (r *ring) submit(wait uint32) error {
	n := r.queued
	atomic.StoreUint32(r.sqTail, *r.sqTail+n)
	r.queued = 0
	flags := uintptr(0)
	if wait > 0 {
		flags = enterGetEvents
	}
	for {
		_, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(n), uintptr(wait), flags, 0, 0)
		switch errno {
		case 0:
			return nil
		case unix.EINTR:
			// Interrupted before submitting or while waiting: what was
			// submitted stays submitted (the head moved).
			n = *r.sqTail - atomic.LoadUint32(r.sqHead)
			continue
		case unix.EBUSY, unix.EAGAIN:
			// Completions are waiting to be reaped: the caller reaps at
			// every wake-up, and the entries stay queued until then.
			return errno
		default:
			return fmt.Errorf("io_uring_enter: %w", errno)
		}
	}
}

// reap hands every posted completion to f, in order.
func (r *ring) reap(f func(cqe)) {
	head := atomic.LoadUint32(r.cqHead)
	tail := atomic.LoadUint32(r.cqTail)
	for ; head != tail; head++ {
		f(*(*cqe)(unsafe.Add(r.cqes, sizeofCQE*uintptr(head&r.cqMask))))
	}
	atomic.StoreUint32(r.cqHead, head)
}

// close releases the ring; the kernel cancels whatever is still queued.
func (r *ring) close() {
	if r.sqem != nil {
		_ = unix.Munmap(r.sqem)
	}
	if r.mem != nil {
		_ = unix.Munmap(r.mem)
	}
	unix.Close(r.fd)
}
