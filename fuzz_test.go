package rowcast

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

// FuzzParseEventID: any client-supplied cursor parses or is refused, never
// panics, and an accepted one prints back to the same id.
func FuzzParseEventID(f *testing.F) {
	for _, s := range []string{"00000000016B3748-00000003", "e18A2B-0000000000000007", "", "e", "e-", "zzz",
		"FFFFFFFFFFFFFFFF-FFFFFFFF", "e0-1", "00000000016B3748_00000003",
		"8C2F0E1D33A4B5C6-00000000016B3748-00000003", "0C2F0E1D33A4B5C6-00000000016B3748-00000003"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		id, err := ParseEventID(s)
		if err != nil {
			return
		}
		back, err := ParseEventID(id.String())
		if err != nil || back != id {
			t.Fatalf("%q parsed as %+v, which prints as %q and parses back as %+v (%v)", s, id, id.String(), back, err)
		}
	})
}

// FuzzCheckEventName: an accepted name is safe in every wire format.
func FuzzCheckEventName(f *testing.F) {
	for _, s := range []string{"notification", "a:b.c-d_e", "x\nid: 1", "", "ü"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if CheckEventName(s) != nil {
			return
		}
		for i := 0; i < len(s); i++ {
			if c := s[i]; c < '-' || c > 'z' || c == '\\' || c == '"' || c == '/' {
				t.Fatalf("accepted %q with byte %q", s, c)
			}
		}
	})
}

// FuzzUnmarshalChange: a message on the cluster stream decodes into a
// change or is refused, never panics, and an accepted one encodes and
// decodes back to the same change.
func FuzzUnmarshalChange(f *testing.F) {
	seeds := []Change{
		{Op: OpInsert, Schema: "public", Table: "tickets", ID: EventID{Epoch: HistoryFlag | 7, Pos: 0x16B3748, Index: 3},
			Key: Row{{Name: "id", Value: []byte("1")}}, Row: Row{{Name: "id", Value: []byte("1")}, {Name: "title", Value: []byte(`"a\u00e9"`)}}, Xid: 42},
		{Op: OpDelete, Table: "tickets", ID: EventID{Pos: 9}, Key: Row{{Name: "id", Value: []byte(`"x"`)}}, Old: Row{{Name: "status", Value: []byte("null")}}},
		{Op: OpMessage, ID: EventID{Epoch: 5, Pos: 2}, Event: "note", Payload: []byte(`{"a":[1,2]}`)},
		{Op: OpStart, ID: EventID{Epoch: HistoryFlag | 1, Pos: 100}, Horizon: EventID{Epoch: HistoryFlag | 1, Pos: 200, Index: 7}},
		{Op: OpResync, Reason: "capture moved"},
	}
	for i := range seeds {
		b, err := MarshalChange(&seeds[i])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, s := range []string{``, `{}`, `{"v":2,"op":"insert"}`, `{"v":1,"op":"insert","id":"zz"}`, `[1]`, `{"v":1,"op":"update","id":"e1-0000000000000001","table":"t","key":{"id":1}}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := UnmarshalChange(data)
		if err != nil {
			return
		}
		b, err := MarshalChange(&c)
		if err != nil {
			t.Fatalf("accepted %q, which does not encode: %v", data, err)
		}
		back, err := UnmarshalChange(b)
		if err != nil {
			t.Fatalf("accepted %q, encoded as %q, which is refused: %v", data, b, err)
		}
		b2, err := MarshalChange(&back)
		if err != nil || string(b2) != string(b) {
			t.Fatalf("accepted %q: encoded %q, then %q (%v)", data, b, b2, err)
		}
	})
}

// FuzzUnmarshalChanges: a stream message decodes into its changes or is
// refused whole, never panics, and what is accepted encodes as a batch
// that decodes back to the same changes.
func FuzzUnmarshalChanges(f *testing.F) {
	samples := wireSamples()
	var w WireBatch
	for n := 1; n <= len(samples); n++ {
		for i := 0; i < n; i++ {
			if err := w.Add(&samples[i]); err != nil {
				f.Fatal(err)
			}
		}
		f.Add(w.Message())
	}
	for _, s := range []string{`{"v":2}`, `{"v":2,"changes":[{"op":"resync"},{"v":1,"op":"resync"}]}`, `{"v":2,"changes":[{"op":"insert"}]}`, `[{"op":"resync"}]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dst := []Change{{Op: OpStart}}
		got, err := UnmarshalChanges(data, dst)
		if err != nil {
			if len(got) != 1 || got[0].Op != OpStart {
				t.Fatalf("refused %q (%v), but dst changed", data, err)
			}
			return
		}
		if len(got) < 2 {
			t.Fatalf("accepted %q without a change", data)
		}
		var w WireBatch
		for i := range got[1:] {
			if err := w.Add(&got[1+i]); err != nil {
				t.Fatalf("accepted %q, which does not encode: %v", data, err)
			}
		}
		m := w.Message()
		back, err := UnmarshalChanges(m, nil)
		if err != nil {
			t.Fatalf("accepted %q, encoded as %q, which is refused: %v", data, m, err)
		}
		for i := range back {
			if err := w.Add(&back[i]); err != nil {
				t.Fatal(err)
			}
		}
		if m2 := w.Message(); string(m2) != string(m) {
			t.Fatalf("accepted %q: encoded %q, then %q", data, m, m2)
		}
	})
}

// FuzzJSONText: the quick path for unescaped strings gives what
// encoding/json gives (statuses, priorities and filters compare by it).
func FuzzJSONText(f *testing.F) {
	for _, s := range []string{`"open"`, `"a\"b"`, `"\u00e9"`, `"é"`, "\"\xff\"", `""`, `"`, `12`, `null`, `"a"b"`, `"tab	"`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, v []byte) {
		got := JSONText(v)
		var want string
		if err := json.Unmarshal(v, &want); err != nil || len(v) == 0 || v[0] != '"' {
			want = string(v)
		}
		if got != want {
			t.Fatalf("JSONText(%q) = %q, want %q", v, got, want)
		}
	})
}

// FuzzValidJSON: ValidJSON says what json.Valid says.
func FuzzValidJSON(f *testing.F) {
	for _, s := range []string{`{"a":[1,2,{"b":null}],"c":"\u00e9\n"}`, `{}`, `[]`, `{"a":}`, `[1,]`, `{"a" 1}`, `-0.5e+3`, `01`, `1.`, `.5`, `"\x"`, `"\u12g4"`,
		"\"\xff\"", "\"a\tb\"", ` true `, `nul`, `{"a":1}x`, `[[[]]]`, `[`, `{"a":1,}`, `{,}`, `""`, `-`, `1e`, `[1 2]`, `{"a":1 "b":2}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := ValidJSON(b), json.Valid(b); got != want {
			t.Fatalf("ValidJSON(%q) = %v, json.Valid %v", b, got, want)
		}
	})
}

func TestValidJSONDepth(t *testing.T) {
	for _, n := range []int{maxJSONDepth - 1, maxJSONDepth, maxJSONDepth + 1} {
		for _, open := range []string{"[", `{"a":`} {
			close := map[string]string{"[": "]", `{"a":`: "}"}[open]
			b := []byte(strings.Repeat(open, n) + "1" + strings.Repeat(close, n))
			if got, want := ValidJSON(b), json.Valid(b); got != want {
				t.Errorf("depth %d of %s: ValidJSON %v, json.Valid %v", n, open, got, want)
			}
			e := []byte(strings.Repeat(open, n-1) + strings.Replace(open, `"a":`, "", 1) + close + strings.Repeat(close, n-1))
			if got, want := ValidJSON(e), json.Valid(e); got != want {
				t.Errorf("depth %d of %s, empty innermost: ValidJSON %v, json.Valid %v", n, open, got, want)
			}
		}
	}
}

// FuzzAppendUTC holds AppendUTC to time.Time.AppendFormat with the two
// layouts it replaces.
func FuzzAppendUTC(f *testing.F) {
	for _, s := range []int64{0, 1, -1, 1764507989, 253402300799, 253402300800, -62135596800, -62135596801} {
		f.Add(s, int64(123456789), int32(3600))
		f.Add(s, int64(0), int32(0))
		f.Add(s, int64(120000000), int32(-19800))
	}
	f.Fuzz(func(t *testing.T, sec, nsec int64, offset int32) {
		tm := time.Unix(sec, nsec%1e9).In(time.FixedZone("", int(offset%(26*3600))))
		for frac, layout := range map[int]string{3: "2006-01-02T15:04:05.000Z07:00", 6: "2006-01-02T15:04:05.999999Z07:00"} {
			want := tm.UTC().AppendFormat([]byte("x"), layout)
			if got := AppendUTC([]byte("x"), tm, frac); string(got) != string(want) {
				t.Fatalf("AppendUTC(%v, %d) = %s, AppendFormat gives %s", tm, frac, got, want)
			}
		}
	})
}
