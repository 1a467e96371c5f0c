package broadcasttest

import (
	"encoding/json"
	"fmt"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"rowcast"
)

// What the transports' fan-out benchmarks share.

// FrameCounter counts the WebSocket frames in a server's byte stream
// (unmasked frames), without decoding them, so that the clients of a
// fan-out benchmark cost as little as possible next to the server.
type FrameCounter struct {
	hdr  [10]byte
	have int   // header bytes collected
	skip int64 // payload bytes still to skip
	n    atomic.Int64
}

// Frames is how many whole frames Feed has seen.
func (f *FrameCounter) Frames() int64 { return f.n.Load() }

// Feed takes the next bytes of the stream.
func (f *FrameCounter) Feed(b []byte) {
	for len(b) > 0 {
		if f.skip > 0 {
			k := min(int64(len(b)), f.skip)
			f.skip -= k
			b = b[k:]
			if f.skip == 0 {
				f.n.Add(1)
			}
			continue
		}
		f.hdr[f.have] = b[0]
		f.have++
		b = b[1:]
		if f.have < 2 {
			continue
		}
		need, l := 2, int64(f.hdr[1]&0x7f)
		switch l {
		case 126:
			need = 4
		case 127:
			need = 10
		}
		if f.have < need {
			continue
		}
		switch l {
		case 126:
			l = int64(f.hdr[2])<<8 | int64(f.hdr[3])
		case 127:
			l = 0
			for _, c := range f.hdr[2:10] {
				l = l<<8 | int64(c)
			}
		}
		f.have = 0
		if l == 0 {
			f.n.Add(1)
		}
		f.skip = l
	}
}

// CPUTime is the process's user and system CPU time.
func CPUTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchRow is the reference ticket's size: a ticket:updated event of about
// 580 bytes.
func BenchRow(id int) rowcast.Row {
	v := func(s string) json.RawMessage { return json.RawMessage(s) }
	return rowcast.Row{
		{Name: "id", Value: v(fmt.Sprint(id))},
		{Name: "title", Value: v(`"` + strings.Repeat("Printer on the third floor jams ", 6) + `"`)},
		{Name: "status", Value: v(`"open"`)},
		{Name: "priority", Value: v(`"high"`)},
		{Name: "assignee_email", Value: v(`"agent.smith@helpdesk.example.com"`)},
		{Name: "customer_email", Value: v(`"someone@customer.example.org"`)},
		{Name: "created_at", Value: v(`"2026-11-30T07:00:00.000000+00:00"`)},
		{Name: "updated_at", Value: v(`"2026-11-30T07:42:00.000000+00:00"`)},
	}
}
