package rowcast

import (
	"bytes"
	"encoding/json"
	"errors"
	"reflect"
	"testing"
	"time"
)

// MarshalChange writes what encoding/json writes for the wire form, so
// nodes of either encoder read each other's messages.
func TestMarshalChangeAsEncodingJSON(t *testing.T) {
	at := time.Date(2026, 11, 30, 10, 4, 5, 123456789, time.FixedZone("x", 3600))
	for _, c := range []Change{
		{Op: OpInsert, Schema: "public", Table: "tickets", ID: EventID{Epoch: HistoryFlag | 7, Pos: 0x16B3748, Index: 3},
			Key: Row{{Name: "id", Value: []byte("1")}}, Row: Row{{Name: "id", Value: []byte("1")}, {Name: "ti<tle>\"\n", Value: []byte(`"a\u00e9"`)}},
			Xid: 42, CommitTime: at, CaptureTime: at.UTC()},
		{Op: OpUpdate, Table: "t&t", ID: EventID{Pos: 9}, Key: Row{{Name: "id", Value: []byte(`"x"`)}}, Row: Row{}, Old: Row{{Name: "s"}}},
		{Op: OpDelete, Table: "tickets", ID: EventID{Pos: 9}, Key: Row{{Name: "id", Value: []byte(`"x"`)}}, Old: Row{{Name: "status", Value: []byte("null")}}},
		{Op: OpMessage, ID: EventID{Epoch: 5, Pos: 2}, Event: "note", Payload: []byte(`{"a":[1,2]}`)},
		{Op: OpStart, ID: EventID{Epoch: HistoryFlag | 1, Pos: 100}, Horizon: EventID{Epoch: HistoryFlag | 1, Pos: 200, Index: 7}},
		{Op: OpResync, Reason: "capture moved <here> & there"},
		{Op: OpTruncate, ID: EventID{Epoch: 1, Pos: 1}, Schema: "s", Table: "tickets", Reason: "table truncated"},
	} {
		got, err := MarshalChange(&c)
		if err != nil {
			t.Fatal(err)
		}
		w := wireChange{V: WireVersion, Op: c.Op, Schema: c.Schema, Table: c.Table,
			Key: c.Key, Row: c.Row, Old: c.Old, Xid: c.Xid, Event: c.Event, Payload: c.Payload, Reason: c.Reason}
		if !c.ID.IsZero() {
			w.ID = c.ID.String()
		}
		if !c.Horizon.IsZero() {
			w.Horizon = c.Horizon.String()
		}
		if !c.CommitTime.IsZero() {
			w.CommitTime = &c.CommitTime
		}
		if !c.CaptureTime.IsZero() {
			w.Capture = &c.CaptureTime
		}
		want, err := json.Marshal(&w)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(want) {
			t.Errorf("MarshalChange:\n got %s\nwant %s", got, want)
		}
		back, err := UnmarshalChange(got)
		if err != nil {
			t.Fatalf("%s: %v", got, err)
		}
		if !back.CommitTime.Equal(c.CommitTime) || !back.CaptureTime.Equal(c.CaptureTime) || back.ID != c.ID || back.Horizon != c.Horizon {
			t.Errorf("%s decodes as %+v", got, back)
		}
	}
	if _, err := MarshalChange(&Change{Op: OpResync, CaptureTime: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}); err == nil {
		t.Error("a time encoding/json refuses was encoded")
	}
}

func BenchmarkMarshalChange(b *testing.B) {
	c := Change{Op: OpUpdate, Schema: "public", Table: "tickets", ID: EventID{Epoch: HistoryFlag | 7, Pos: 0x16B3748, Index: 3},
		Key: Row{{Name: "id", Value: []byte("1")}}, Row: Row{{Name: "id", Value: []byte("1")}, {Name: "title", Value: []byte(`"printer on fire"`)},
			{Name: "status", Value: []byte(`"open"`)}, {Name: "priority", Value: []byte(`"high"`)}, {Name: "assignee_id", Value: []byte("7")}},
		Xid: 42, CommitTime: time.Now(), CaptureTime: time.Now()}
	c.Old = c.Row
	b.ReportAllocs()
	for b.Loop() {
		if _, err := MarshalChange(&c); err != nil {
			b.Fatal(err)
		}
	}
}

func wireSamples() []Change {
	at := time.Date(2026, 11, 30, 10, 4, 5, 123456789, time.UTC)
	return []Change{
		{Op: OpInsert, Schema: "public", Table: "tickets", ID: EventID{Epoch: HistoryFlag | 7, Pos: 0x16B3748, Index: 3},
			Key: Row{{Name: "id", Value: []byte("1")}}, Row: Row{{Name: "id", Value: []byte("1")}, {Name: "ti<tle>\"\n", Value: []byte(`"a\u00e9"`)}},
			Xid: 42, CommitTime: at, CaptureTime: at},
		{Op: OpMessage, ID: EventID{Epoch: 5, Pos: 2}, Event: "note", Payload: []byte(`{"a":
[1,2]}`)},
		{Op: OpStart, ID: EventID{Epoch: HistoryFlag | 1, Pos: 100}, Horizon: EventID{Epoch: HistoryFlag | 1, Pos: 200, Index: 7}},
		{Op: OpDelete, Table: "tickets", ID: EventID{Pos: 9}, Key: Row{{Name: "id", Value: []byte(`"x"`)}}, Old: Row{{Name: "status", Value: []byte("null")}}},
		{Op: OpResync, Reason: "capture moved <here> & there"},
	}
}

// A batch decodes to the changes that went in, in order; a batch of one
// is the version 1 message MarshalChange writes; Undo and Size agree with
// what Message returns.
func TestWireBatch(t *testing.T) {
	samples := wireSamples()
	var want []Change
	for i := range samples {
		b, err := MarshalChange(&samples[i])
		if err != nil {
			t.Fatal(err)
		}
		c, err := UnmarshalChange(b)
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, c)
	}
	var w WireBatch
	for n := 1; n <= len(samples); n++ {
		for i := 0; i < n; i++ {
			if err := w.Add(&samples[i]); err != nil {
				t.Fatal(err)
			}
		}
		// One more, taken out again.
		size := w.Size()
		if err := w.Add(&samples[0]); err != nil {
			t.Fatal(err)
		}
		w.Undo()
		if w.Len() != n || w.Size() != size {
			t.Fatalf("after Undo: %d changes, %d bytes; want %d, %d", w.Len(), w.Size(), n, size)
		}
		m := w.Message()
		if len(m) != size {
			t.Fatalf("Size said %d, the message is %d bytes", size, len(m))
		}
		if w.Len() != 0 || w.Message() != nil {
			t.Fatal("the batch is not empty after Message")
		}
		if n == 1 {
			single, _ := MarshalChange(&samples[0])
			if string(m) != string(single) {
				t.Fatalf("a batch of one:\n got %s\nwant %s", m, single)
			}
		} else if !json.Valid(m) || !bytes.HasPrefix(m, []byte(`{"v":2,"changes":[{"op":`)) {
			t.Fatalf("a batch of %d: %s", n, m)
		}
		prefix := []Change{{Op: OpResync}}
		got, err := UnmarshalChanges(m, prefix)
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if !reflect.DeepEqual(got[1:], want[:n]) || got[0].Op != OpResync {
			t.Fatalf("a batch of %d decodes as\n%+v\nwant\n%+v", n, got[1:], want[:n])
		}
	}
	// A change that cannot be encoded leaves the batch as it was.
	if err := w.Add(&samples[3]); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(&Change{Op: OpResync, CaptureTime: time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)}); err == nil {
		t.Fatal("a time encoding/json refuses was encoded")
	}
	if got, err := UnmarshalChanges(w.Message(), nil); err != nil || len(got) != 1 || got[0].ID != samples[3].ID {
		t.Fatalf("after a refused change: %+v, %v", got, err)
	}
}

// A message is decoded whole or refused whole.
func TestUnmarshalChangesRefuses(t *testing.T) {
	ok := `{"op":"resync"}`
	for _, m := range []string{
		`{"v":2}`,
		`{"v":2,"changes":[]}`,
		`{"v":2,"changes":null}`,
		`{"v":2,"op":"resync","changes":[` + ok + `]}`,
		`{"v":2,"changes":[` + ok + `,{"v":1,"op":"resync"}]}`,
		`{"v":2,"changes":[` + ok + `,{"op":"insert"}]}`,
		`{"v":2,"changes":[` + ok + `,{"op":"explode"}]}`,
		`{"v":2,"changes":[` + ok + `,7]}`,
		`{"v":2,"changes":{"op":"resync"}}`,
		`{"v":1,"op":"resync","changes":[` + ok + `]}`,
		`{"v":3,"changes":[` + ok + `]}`,
		`{"v":2,"changes":[` + ok,
		`[` + ok + `]`,
	} {
		dst := []Change{{Op: OpStart}}
		got, err := UnmarshalChanges([]byte(m), dst)
		if err == nil {
			t.Errorf("%s: accepted as %+v", m, got)
			continue
		}
		if len(got) != 1 || got[0].Op != OpStart {
			t.Errorf("%s: refused (%v) but dst changed to %+v", m, err, got)
		}
	}
	if _, err := UnmarshalChanges([]byte(`{"v":3,"changes":[`+ok+`]}`), nil); !errors.Is(err, ErrWireVersion) {
		t.Errorf("version 3: %v, want ErrWireVersion", err)
	}
}
