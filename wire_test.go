package rowcast

import (
	"encoding/json"
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
