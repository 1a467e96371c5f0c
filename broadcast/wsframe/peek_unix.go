//go:build unix

package wsframe

import "syscall"

// peek reports whether a read of the socket fd would not block: bytes
// are waiting, the client closed, or the socket failed (the read that
// follows sees which). It reads nothing.
func peek(fd uintptr) bool {
	var b [1]byte
	for {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			return false
		}
		return true
	}
}
