//go:build unix

package cdc

import (
	"syscall"
	"time"
)

// nap sleeps d on the calling thread. time.Sleep cannot take so short a
// pause: the runtime waits for its timers in epoll with a millisecond's
// resolution. On Linux with GOMAXPROCS=1, sleeps of 100 to 500 µs lasted
// 1.1 ms on average with time.Sleep, and 142 µs for 100 µs with
// nanosleep(2). The thread is blocked meanwhile (the runtime's monitor may
// hand its processor to other goroutines).
func nap(d time.Duration) {
	ts := syscall.NsecToTimespec(d.Nanoseconds())
	_ = syscall.Nanosleep(&ts, nil)
}
