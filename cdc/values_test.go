package cdc

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5/pgtype"

	"rowcast"
)

func TestDecodeValues(t *testing.T) {
	d := newValueDecoder()
	cases := []struct {
		oid  uint32
		text string
		want string
	}{
		{pgtype.TextOID, "plain", `"plain"`},
		{pgtype.TextOID, "quote \" back \\ nl \n tab \t bell \x07 <&> é 😀", `"quote \" back \\ nl \n tab \t bell \u0007 <&> é 😀"`},
		{pgtype.TextOID, "bad \xff utf8", `"bad \ufffd utf8"`},
		{pgtype.VarcharOID, "", `""`},
		{pgtype.Int4OID, "-42", `-42`},
		{pgtype.Int8OID, "9223372036854775807", `9223372036854775807`},
		{pgtype.BoolOID, "t", `true`},
		{pgtype.BoolOID, "f", `false`},
		{pgtype.Float8OID, "1.5e+20", `1.5e+20`},
		{pgtype.Float8OID, "-0", `-0`},
		{pgtype.Float8OID, "NaN", `"NaN"`},
		{pgtype.Float4OID, "-Infinity", `"-Infinity"`},
		{pgtype.NumericOID, "123456789012345678901234567890.123", `123456789012345678901234567890.123`},
		{pgtype.NumericOID, "Infinity", `"Infinity"`},
		{pgtype.TimestamptzOID, "2026-11-23 02:30:31.123456+00", `"2026-11-23T02:30:31.123456Z"`},
		{pgtype.TimestamptzOID, "2026-11-23 04:30:31.5+02", `"2026-11-23T02:30:31.5Z"`},
		{pgtype.TimestamptzOID, "infinity", `"infinity"`},
		{pgtype.TimestampOID, "2026-11-23 02:30:31", `"2026-11-23T02:30:31Z"`},
		{pgtype.TimestampOID, "-infinity", `"-infinity"`},
		{pgtype.DateOID, "2026-11-23", `"2026-11-23"`},
		{pgtype.JSONBOID, `{"a": [1, 2.50, null]}`, `{"a": [1, 2.50, null]}`},
		{pgtype.ByteaOID, `\x00ff10`, `"AP8Q"`},
		{pgtype.ByteaOID, `\x`, `""`},
		{pgtype.UUIDOID, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11", `"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"`},
		{pgtype.Int4ArrayOID, "{1,2,NULL,-3}", `[1,2,null,-3]`},
		{pgtype.Int4ArrayOID, "{{1,2},{3,4}}", `[[1,2],[3,4]]`},
		{pgtype.Int4ArrayOID, "[0:1]={7,8}", `[7,8]`},
		{pgtype.Int4ArrayOID, "{}", `[]`},
		{pgtype.TextArrayOID, `{plain,"with space","q\"uote","back\\slash",NULL,"NULL"}`, `["plain","with space","q\"uote","back\\slash",null,"NULL"]`},
		{pgtype.BoolArrayOID, "{t,f}", `[true,false]`},
		{pgtype.TimestamptzArrayOID, `{"2026-11-23 02:30:31+00"}`, `["2026-11-23T02:30:31Z"]`},
		{pgtype.BoxArrayOID, "{(1,1),(0,0);(2,2),(1,1)}", `["(1,1),(0,0)","(2,2),(1,1)"]`},
		{pgtype.IntervalOID, "1 day 02:00:00", `"1 day 02:00:00"`},
		{99999, "user enum value", `"user enum value"`},
	}
	for _, c := range cases {
		got, err := d.decode(c.oid, []byte(c.text))
		if err != nil {
			t.Errorf("decode(%d, %q): %v", c.oid, c.text, err)
			continue
		}
		if string(got) != c.want {
			t.Errorf("decode(%d, %q) = %s, want %s", c.oid, c.text, got, c.want)
		}
		// appendDecode writes the same after what is in the buffer.
		if got, err := d.appendDecode([]byte("prefix,"), c.oid, []byte(c.text)); err != nil || string(got) != "prefix,"+c.want {
			t.Errorf("appendDecode(%d, %q) = %s, %v, want prefix,%s", c.oid, c.text, got, err, c.want)
		}
	}
	for _, bad := range []struct {
		oid  uint32
		text string
	}{{pgtype.Int4OID, "1x"}, {pgtype.BoolOID, "yes"}, {pgtype.Int4ArrayOID, "{1,2"}, {pgtype.NumericOID, "1.2.3"}, {pgtype.JSONBOID, "{"}} {
		if got, err := d.decode(bad.oid, []byte(bad.text)); err == nil {
			t.Errorf("decode(%d, %q) = %s, want an error", bad.oid, bad.text, got)
		}
		if got, err := d.appendDecode(nil, bad.oid, []byte(bad.text)); err == nil {
			t.Errorf("appendDecode(%d, %q) = %s, want an error", bad.oid, bad.text, got)
		}
	}
}

// The fast timestamp path must agree with the codec path.
func TestFastTimestampMatchesCodec(t *testing.T) {
	d := newValueDecoder()
	for _, c := range []struct {
		oid  uint32
		text string
	}{
		{pgtype.TimestamptzOID, "2026-11-23 02:30:31+00"},
		{pgtype.TimestamptzOID, "2026-11-23 02:30:31.1+00"},
		{pgtype.TimestamptzOID, "0001-01-01 00:00:00.000001+00"},
		{pgtype.TimestampOID, "2026-11-23 02:30:31.123456"},
		{pgtype.TimestampOID, "1999-12-31 23:59:59.99"},
	} {
		fast, ok := fastTimestamp(c.oid, []byte(c.text))
		if !ok {
			t.Errorf("%q: fast path not taken", c.text)
			continue
		}
		typ, _ := d.types.TypeForOID(c.oid)
		v, err := typ.Codec.DecodeValue(d.types, c.oid, pgtype.TextFormatCode, []byte(c.text))
		if err != nil {
			t.Fatal(err)
		}
		want := `"` + v.(time.Time).UTC().Format(timeLayout) + `"`
		if string(fast) != want {
			t.Errorf("%q: fast %s, codec %s", c.text, fast, want)
		}
	}
	for _, text := range []string{"2026-11-23 02:30:31+02", "2026-11-23 02:30:31. +00", "12026-11-23 02:30:31+00", "2026-11-23 02:30:31 BC+00", "infinity"} {
		if out, ok := fastTimestamp(pgtype.TimestamptzOID, []byte(text)); ok {
			t.Errorf("%q took the fast path: %s", text, out)
		}
	}
}

// Every value type through PostgreSQL, pgoutput and the decoder.
func TestValuesFromPostgres(t *testing.T) {
	url, conn := slotDB(t)
	slotExec(t, conn, `CREATE TYPE mood AS ENUM ('happy', 'sad')`)
	slotExec(t, conn, `CREATE TABLE vals(
		id int primary key, i int, big bigint, num numeric, f float8, f4 real, b bool, t text,
		ts timestamptz, tsz timestamp, d date, j json, jb jsonb, by bytea, u uuid, arr int[],
		tarr text[], m mood, nul text, fnan float8, ninf numeric)`)
	// Captured as a table of its own: rowcast hands on no other table.
	setupLogical(t, conn, "public.vals", "vals", "vals")
	sink := &slotSink{}
	runSlot(t, SlotConfig{ConnString: url, Publication: "vals", Slot: "vals"}, sink)
	// A session time zone that is not UTC shows timestamptz is converted.
	slotExec(t, conn, `SET TimeZone = 'America/New_York'`)
	slotExec(t, conn, `INSERT INTO vals VALUES (1, -2147483648, 9223372036854775806,
		123456789012345678901234567890.5, 0.1, 1.5, true, 'héllo "wörld" ☃ 😀',
		'2026-11-23 02:30:31.123456+00', '2026-11-23 02:30:31', '2026-11-23',
		'{"b": 1, "a": [true, null, 1.10]}', '{"b": 1, "a": [true, null, 1.10]}',
		'\x00ff', 'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{1,NULL,3}',
		'{"a b",c}', 'sad', NULL, 'NaN', '-Infinity')`)
	var row rowcast.Row
	waitUntil(t, 20*time.Second, "the vals row", func() bool {
		for _, c := range sink.snapshot() {
			if c.Table == "vals" && c.Op == rowcast.OpInsert {
				row = c.Row
				return true
			}
		}
		return false
	})
	want := `{"id":1,"i":-2147483648,"big":9223372036854775806,` +
		`"num":123456789012345678901234567890.5,"f":0.1,"f4":1.5,"b":true,` +
		`"t":"héllo \"wörld\" ☃ 😀","ts":"2026-11-23T02:30:31.123456Z","tsz":"2026-11-23T02:30:31Z",` +
		`"d":"2026-11-23","j":{"b": 1, "a": [true, null, 1.10]},"jb":{"a": [true, null, 1.10], "b": 1},` +
		`"by":"AP8=","u":"a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11","arr":[1,null,3],` +
		`"tarr":["a b","c"],"m":"sad","nul":null,"fnan":"NaN","ninf":"-Infinity"}`
	// Built by hand: encoding/json would compact the verbatim json values.
	var b strings.Builder
	for i, c := range row {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, "%q:%s", c.Name, c.Value)
	}
	if got := "{" + b.String() + "}"; got != want {
		t.Errorf("row =\n%s\nwant\n%s", got, want)
	}
}

// The hot path: a tickets-like row of text, int and timestamp columns.
func BenchmarkDecodeTicketRow(b *testing.B) {
	d := newValueDecoder()
	cols := []struct {
		oid  uint32
		text []byte
	}{
		{pgtype.Int8OID, []byte("1234567")},
		{pgtype.TextOID, []byte("Printer on the third floor is on fire again")},
		{pgtype.TextOID, []byte(strings.Repeat("Long description with some detail. ", 10))},
		{pgtype.TextOID, []byte("open")},
		{pgtype.TextOID, []byte("medium")},
		{pgtype.TextOID, []byte("hardware")},
		{pgtype.TextOID, []byte("ann@example.com")},
		{pgtype.BoolOID, []byte("t")},
		{pgtype.TimestamptzOID, []byte("2026-11-23 02:30:31.123456+00")},
		{pgtype.TimestamptzOID, []byte("2026-11-23 02:31:00.5+00")},
	}
	b.ReportAllocs()
	for b.Loop() {
		for _, c := range cols {
			if _, err := d.decode(c.oid, c.text); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// A whole tuple of the reference ticket, as the replication loop decodes
// it: one buffer for all its values.
func BenchmarkDecodeTuple(b *testing.B) {
	st := &stream{dec: newValueDecoder()}
	rel := &relation{schema: "public", table: "tickets"}
	t := &pglogrepl.TupleData{}
	for i, c := range []struct {
		oid  uint32
		text string
	}{
		{pgtype.Int8OID, "1234567"},
		{pgtype.TextOID, "Printer on the third floor is on fire again"},
		{pgtype.TextOID, strings.Repeat("Long description with some detail. ", 10)},
		{pgtype.TextOID, "open"},
		{pgtype.TextOID, "medium"},
		{pgtype.TextOID, "hardware"},
		{pgtype.TextOID, "ann@example.com"},
		{pgtype.BoolOID, "t"},
		{pgtype.TimestamptzOID, "2026-11-23 02:30:31.123456+00"},
		{pgtype.TimestamptzOID, "2026-11-23 02:31:00.5+00"},
	} {
		rel.cols = append(rel.cols, relColumn{name: fmt.Sprint("c", i), oid: c.oid})
		t.Columns = append(t.Columns, &pglogrepl.TupleDataColumn{DataType: pglogrepl.TupleDataTypeText, Length: uint32(len(c.text)), Data: []byte(c.text)})
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := st.decodeTuple(rel, t); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeText(b *testing.B) {
	d := newValueDecoder()
	v := []byte("Printer on the third floor is on fire again")
	b.SetBytes(int64(len(v)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := d.decode(pgtype.TextOID, v); err != nil {
			b.Fatal(err)
		}
	}
}

// An array nested deeper than PostgreSQL allows is refused, not parsed
// recursively until the stack runs out (found by FuzzPgoutputStream).
func TestArrayDepthBounded(t *testing.T) {
	d := newValueDecoder()
	if _, err := d.decode(1007, []byte(strings.Repeat("{", 1_000_000))); err == nil {
		t.Fatal("a million-deep array accepted")
	}
	v, err := d.decode(1007, []byte("{{{{{{1}}}}}}"))
	if err != nil || string(v) != "[[[[[[1]]]]]]" {
		t.Fatalf("six dimensions: %s %v", v, err)
	}
	if _, err := d.decode(1007, []byte("{{{{{{{1}}}}}}}")); err == nil {
		t.Fatal("seven dimensions accepted")
	}
}
