package rowcast

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

func TestRowJSONRoundTrip(t *testing.T) {
	in := `{"id":12345678901234567890,"title":"Hi \"there\" \u00e9","weird \"name\"\n":null,"obj":{"a":[1,2]},"n":1.50}`
	var r Row
	if err := json.Unmarshal([]byte(in), &r); err != nil {
		t.Fatal(err)
	}
	if len(r) != 5 || r[1].Name != "title" || r[2].Name != "weird \"name\"\n" {
		t.Fatalf("columns %+v", r)
	}
	out, _ := r.MarshalJSON()
	if !json.Valid(out) {
		t.Fatalf("invalid JSON %s", out)
	}
	var back Row
	if err := json.Unmarshal(out, &back); err != nil || len(back) != 5 {
		t.Fatalf("round trip: %v %s", err, out)
	}
	for i := range r {
		if r[i].Name != back[i].Name || string(r[i].Value) != string(back[i].Value) {
			t.Errorf("column %d: %q=%s, back %q=%s", i, r[i].Name, r[i].Value, back[i].Name, back[i].Value)
		}
	}
	if s, ok := r.Text("title"); !ok || s != "Hi \"there\" é" {
		t.Errorf("Text = %q %v", s, ok)
	}
	if _, ok := r.Text("weird \"name\"\n"); ok {
		t.Error("NULL column reported as present")
	}
	if v, _ := (Row{{Name: "x"}}).MarshalJSON(); string(v) != `{"x":null}` {
		t.Errorf("empty value: %s", v)
	}
}

func TestEventIDString(t *testing.T) {
	h := HistoryEpoch("7311234567890123456", 1)
	if h&HistoryFlag == 0 || h == HistoryEpoch("7311234567890123456", 2) || h == HistoryEpoch("7311234567890123457", 1) {
		t.Errorf("history epochs: %X", h)
	}
	for _, id := range []EventID{{Pos: 0x16B3748, Index: 3}, {Epoch: 0x18A2B, Pos: 7}, {Pos: ^uint64(0), Index: ^uint32(0)},
		{Epoch: h, Pos: 0x16B3748, Index: 3}} {
		back, err := ParseEventID(id.String())
		if err != nil || back != id {
			t.Errorf("%v → %q → %v %v", id, id.String(), back, err)
		}
	}
	// The String form without fmt is the one clients hold.
	for _, id := range []EventID{{}, {Pos: 0x16B3748, Index: 3}, {Epoch: 1}, {Epoch: 0x18A2B, Pos: 7}, {Epoch: ^uint64(0) &^ HistoryFlag, Pos: ^uint64(0)},
		{Epoch: h, Pos: 0x16B3748, Index: 3}, {Epoch: HistoryFlag}, {Pos: ^uint64(0), Index: ^uint32(0)}} {
		var want string
		switch {
		case id.Epoch&HistoryFlag != 0:
			want = fmt.Sprintf("%016X-%016X-%08X", id.Epoch, id.Pos, id.Index)
		case id.Epoch == 0:
			want = fmt.Sprintf("%016X-%08X", id.Pos, id.Index)
		default:
			want = fmt.Sprintf("e%X-%016X", id.Epoch, id.Pos)
		}
		if got := id.String(); got != want {
			t.Errorf("%+v prints as %q, want %q", id, got, want)
		}
	}
	for _, e := range []uint64{0, h} {
		a, b := EventID{Epoch: e, Pos: 0x100, Index: 2}, EventID{Epoch: e, Pos: 0x1000, Index: 0}
		if !a.Less(b) || !(a.String() < b.String()) {
			t.Error("ids must sort as strings within an epoch")
		}
	}
	// A notify id cannot claim a history.
	if _, err := ParseEventID(fmt.Sprintf("e%X-0000000000000001", h)); err == nil {
		t.Error("a notify id with a history epoch was accepted")
	}
	for _, bad := range []string{"", "x", "e-1", "e0-1", "0000000000000000-0000000", "zzzzzzzzzzzzzzzz-00000000"} {
		if _, err := ParseEventID(bad); err == nil {
			t.Errorf("ParseEventID(%q) accepted", bad)
		}
	}
}

func TestSnapshotVisible(t *testing.T) {
	s := XidSnapshot{Xmin: 100, Xmax: 110, Xip: []uint64{105}}
	for xid, want := range map[uint64]bool{99: true, 100: true, 105: false, 109: true, 110: false, 200: false} {
		if s.Visible(xid) != want {
			t.Errorf("Visible(%d) = %v", xid, !want)
		}
	}
	// 32-bit xids from logical replication are widened with the epoch.
	wide := XidSnapshot{Xmin: 5<<32 | 100, Xmax: 5<<32 | 110}
	if !wide.Visible(99) || wide.Visible(120) {
		t.Error("32-bit xid not widened")
	}
	// Counts loaded just before the first wraparound: changes after it
	// carry small 32-bit xids and must not look already counted.
	edge := XidSnapshot{Xmin: 1<<32 - 20, Xmax: 1<<32 - 10, Xip: []uint64{1<<32 - 15}}
	for xid, want := range map[uint64]bool{5: false, 1<<32 - 11: true, 1<<32 - 15: false, 1<<32 - 30: true, 1<<32 - 10: false} {
		if edge.Visible(xid) != want {
			t.Errorf("before the wraparound: Visible(%d) = %v", xid, !want)
		}
	}
	// And just after it: 32-bit xids from before it are old.
	after := XidSnapshot{Xmin: 1<<32 + 3, Xmax: 1<<32 + 8}
	for xid, want := range map[uint64]bool{1<<32 - 5: true, 4: true, 9: false, 1<<32 + 9: false} {
		if after.Visible(xid) != want {
			t.Errorf("after the wraparound: Visible(%d) = %v", xid, !want)
		}
	}
}

func BenchmarkRowJSON(b *testing.B) {
	r := Row{}
	for _, c := range []string{"id", "title", "description", "status", "priority", "category", "requester_email", "assignee_email", "created_at", "updated_at"} {
		r = append(r, Column{Name: c, Value: json.RawMessage(`"some value of a typical length"`)})
	}
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		r.MarshalJSON()
	}
}

// FuzzRowUnmarshal checks the order-keeping scanner against encoding/json:
// same columns, and each value decodes to the same thing.
func FuzzRowUnmarshal(f *testing.F) {
	for _, seed := range []string{
		`{}`, `null`, `{"a":1}`, `{ "a" : "x\"}]" , "b":[1,{"c":"]}"}], "d" : null }`,
		`{"t":"2026-11-23T02:30:31.123456+00:00","n":-1.5e+10,"b":true,"o":{"k":[[]]}}`,
		`{"esc\u0041pe":"\\","uni":"\u00e9"}`, "{\n\t\"a\"\t:\n1\n}",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, in string) {
		var ref map[string]json.RawMessage
		if err := json.Unmarshal([]byte(in), &ref); err != nil || ref == nil {
			return
		}
		var r Row
		if err := json.Unmarshal([]byte(in), &r); err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		seen := map[string]bool{}
		for _, c := range r {
			seen[c.Name] = true
		}
		if len(seen) != len(ref) {
			t.Fatalf("%q: %d names, want %d", in, len(seen), len(ref))
		}
		for _, c := range r {
			// Valid JSON, not necessarily decodable into Go values:
			// 1e1000 is a JSON number no float64 holds.
			if !json.Valid(c.Value) {
				t.Fatalf("%q: column %q value %q is not JSON", in, c.Name, c.Value)
			}
			if _, known := ref[c.Name]; !known {
				t.Fatalf("%q: unknown column %q", in, c.Name)
			}
		}
	})
}

func TestCheckEventName(t *testing.T) {
	for _, ok := range []string{"notification", "ticket.assigned", "a:b-c_d", strings.Repeat("x", 64)} {
		if err := CheckEventName(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	for _, bad := range []string{"", "x\nid: 1", "has space", "ünï", strings.Repeat("x", 65), "a\x00"} {
		if err := CheckEventName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func BenchmarkRowUnmarshal(b *testing.B) {
	data := []byte(`{"id":1234,"title":"Printer on the third floor jams","description":"Long description with some detail.","status":"open","priority":"medium","category":"hardware","requester_email":"ann@example.com","assignee_email":"agent@example.com","created_at":"2026-11-23T02:30:31.123456Z","updated_at":"2026-11-23T02:31:00.5Z"}`)
	b.ReportAllocs()
	for b.Loop() {
		var r Row
		if err := r.UnmarshalJSON(data); err != nil {
			b.Fatal(err)
		}
	}
}
