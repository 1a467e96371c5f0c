package main

import (
	"fmt"
	"runtime"
	"syscall"
	"unsafe"
)

// cpuMask is a sched_setaffinity(2) mask of up to 1,024 cores.
type cpuMask [16]uint64

// threadAffinity sets the calling thread's affinity (pid 0 is the thread
// itself, not the process).
func threadAffinity(m *cpuMask) error {
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_SETAFFINITY, 0, unsafe.Sizeof(*m), uintptr(unsafe.Pointer(m)))
	if errno != 0 {
		return errno
	}
	return nil
}

func getThreadAffinity(m *cpuMask) error {
	_, _, errno := syscall.RawSyscall(syscall.SYS_SCHED_GETAFFINITY, 0, unsafe.Sizeof(*m), uintptr(unsafe.Pointer(m)))
	if errno != 0 {
		return errno
	}
	return nil
}

// everyCore runs start on an OS thread allowed on every core of the
// machine. The pinned bench process runs on core 0 (taskset), and a child
// inherits the affinity of the thread that forks it: without this,
// PostgreSQL (every backend and WAL sender with it) and pgbench would be
// confined to core 0 beside the load generator, and never run on core 1.
// What start forks stays unpinned, and so do PostgreSQL's backends, which
// the postmaster forks; rowcast, pg_recvlogical and the bare server are
// pinned by taskset explicitly (pinned).
func (b *bench) everyCore(start func() error) error {
	if !b.opts.pin {
		return start()
	}
	runtime.LockOSThread()
	var own, all cpuMask
	if err := getThreadAffinity(&own); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("reading the bench's CPU affinity: %w", err)
	}
	for i := range min(machineCores(), len(all)*64) {
		all[i/64] |= 1 << (i % 64)
	}
	if err := threadAffinity(&all); err != nil {
		runtime.UnlockOSThread()
		return fmt.Errorf("allowing every core for PostgreSQL and pgbench: %w", err)
	}
	err := start()
	if rerr := threadAffinity(&own); rerr != nil {
		// The thread stays locked to this goroutine rather than go back
		// to the pool unpinned.
		return fmt.Errorf("pinning the bench again: %w", rerr)
	}
	runtime.UnlockOSThread()
	return err
}
