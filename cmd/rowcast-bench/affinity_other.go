//go:build !linux

package main

// everyCore runs start: pinning (taskset) is Linux only.
func (b *bench) everyCore(start func() error) error { return start() }
