//go:build !unix

package cdc

import "time"

// nap sleeps d, or as close to it as the runtime's timers allow.
func nap(d time.Duration) { time.Sleep(d) }
