package cluster

import (
	"bytes"
	"testing"
)

// FuzzPartial: any sequence of messages and part headers, as a stream
// anyone may publish to could hold. The consumer's assembly never panics,
// and what it returns is exactly parts 1 to n of one change, in order, on
// consecutive sequences.
func FuzzPartial(f *testing.F) {
	f.Add([]byte("1/3 a|2/3 b|3/3 c"))
	f.Add([]byte("1/2 a|1/2 b|2/2 c|2/2 d"))
	f.Add([]byte("x a|0/2 b|3/2 c|- d|1/1 e"))
	f.Fuzz(func(t *testing.T, in []byte) {
		var p partial
		type sent struct {
			part, parts int
			data        []byte
			seq         uint64
		}
		var run []sent // the current run of parts from 1
		seq := uint64(0)
		for _, m := range bytes.Split(in, []byte("|")) {
			h, data, _ := bytes.Cut(m, []byte(" "))
			seq++
			if len(h) > 0 && h[0] == '+' {
				seq++ // a gap in the sequence
			}
			d := Delivery{Data: data, Seq: seq}
			if string(h) != "-" {
				d.Part, d.Parts = parsePart(string(bytes.TrimPrefix(h, []byte("+"))))
			}
			if d.Parts == 0 {
				p.drop()
				run = nil
				continue
			}
			switch {
			case d.Parts > 0 && d.Part == 1:
				run = []sent{{d.Part, d.Parts, data, seq}}
			case d.Parts > 0 && len(run) > 0 && d.Part == len(run)+1 && d.Parts == run[0].parts && seq == run[len(run)-1].seq+1:
				run = append(run, sent{d.Part, d.Parts, data, seq})
			default:
				run = nil
			}
			got, err := p.add(d)
			if err != nil && d.Parts > 0 {
				t.Fatalf("part %d/%d refused: %v", d.Part, d.Parts, err)
			}
			if got == nil {
				continue
			}
			if len(run) == 0 || len(run) != run[0].parts {
				t.Fatalf("returned %q without a whole run of parts (%d gathered)", got, len(run))
			}
			var want []byte
			for _, s := range run {
				want = append(want, s.data...)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("returned %q, want %q", got, want)
			}
			run = nil
		}
	})
}
