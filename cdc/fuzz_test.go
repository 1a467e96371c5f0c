package cdc

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"rowcast"
)

// Fuzz targets for what reaches capture from PostgreSQL: pgoutput messages
// (any table may sit in a publication), column values in text form, and
// NOTIFY payloads (any role may NOTIFY on the channel). Seeds are here and
// in testdata/fuzz/.

// FuzzValueDecode: any text for any type decodes to valid JSON or an error.
func FuzzValueDecode(f *testing.F) {
	for _, s := range []struct {
		oid  uint32
		text string
	}{{16, "t"}, {20, "-9223372036854775808"}, {21, "12"}, {700, "NaN"}, {701, "-Infinity"}, {1700, "1.50"},
		{1114, "2024-01-02 03:04:05.123456"}, {1184, "2024-01-02 03:04:05+02"}, {1082, "infinity"}, {17, `\xdeadbeef`},
		{114, `{"a": [1, 2]}`}, {3802, `{"b": null}`}, {1007, `{1,NULL,3}`}, {1009, `{"a\"b",NULL,"c,d"}`},
		{1009, `{{a,b},{c,d}}`}, {25, "plain \x00 text"}, {2950, "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"}, {1186, "1 day"}} {
		f.Add(s.oid, []byte(s.text))
	}
	d := newValueDecoder()
	f.Fuzz(func(t *testing.T, oid uint32, text []byte) {
		v, err := d.decode(oid, text)
		if err != nil {
			return
		}
		if !json.Valid(v) {
			t.Fatalf("type %d, text %q: invalid JSON %q", oid, text, v)
		}
	})
}

// recordSink keeps what the stream hands on.
type recordSink struct{ changes []rowcast.Change }

func (r *recordSink) Apply(_ context.Context, cs []rowcast.Change) error {
	r.changes = append(r.changes, cs...)
	return nil
}

// noDB stands in for the regular connection: the primary key of every
// relation is its first column ("id"), and reading unchanged TOAST values
// fails as a lost connection would.
type noDB struct{}

func (noDB) Query(_ context.Context, sql string, _ ...any) (pgx.Rows, error) {
	if strings.Contains(sql, "indisprimary") {
		return &textRows{vals: []string{"id"}, i: -1}, nil
	}
	return nil, errors.New("no database in this test")
}

func (noDB) QueryRow(context.Context, string, ...any) pgx.Row { return errRow{} }

// errRow is a row that cannot be read.
type errRow struct{}

func (errRow) Scan(...any) error { return errors.New("no database in this test") }

// textRows is a one-column result of text values.
type textRows struct {
	vals []string
	i    int
}

func (r *textRows) Close()                                       {}
func (r *textRows) Err() error                                   { return nil }
func (r *textRows) CommandTag() pgconn.CommandTag                { return pgconn.CommandTag{} }
func (r *textRows) FieldDescriptions() []pgconn.FieldDescription { return nil }
func (r *textRows) Next() bool                                   { r.i++; return r.i < len(r.vals) }
func (r *textRows) Values() ([]any, error)                       { return []any{r.vals[r.i]}, nil }
func (r *textRows) RawValues() [][]byte                          { return [][]byte{[]byte(r.vals[r.i])} }
func (r *textRows) Conn() *pgx.Conn                              { return nil }
func (r *textRows) TypeMap() *pgtype.Map                         { return pgtype.NewMap() }
func (r *textRows) Scan(dest ...any) error {
	p, ok := dest[0].(*string)
	if !ok || len(dest) != 1 {
		return errors.New("textRows scans one string")
	}
	*p = r.vals[r.i]
	return nil
}

// pgoutput message builders for the seeds.
func relationMsg(id uint32, schema, table string, cols ...string) []byte {
	b := []byte{'R'}
	b = binary.BigEndian.AppendUint32(b, id)
	b = append(append(b, schema...), 0)
	b = append(append(b, table...), 0)
	b = append(b, 'f') // replica identity full
	b = binary.BigEndian.AppendUint16(b, uint16(len(cols)))
	for i, c := range cols {
		flag := byte(0)
		if i == 0 {
			flag = 1 // the key
		}
		b = append(b, flag)
		b = append(append(b, c...), 0)
		b = binary.BigEndian.AppendUint32(b, 25) // text
		b = binary.BigEndian.AppendUint32(b, 0xFFFFFFFF)
	}
	return b
}

func beginMsg(xid uint32) []byte {
	b := []byte{'B'}
	b = binary.BigEndian.AppendUint64(b, 0x1000)
	b = binary.BigEndian.AppendUint64(b, 0)
	return binary.BigEndian.AppendUint32(b, xid)
}

func commitMsg() []byte {
	b := []byte{'C', 0}
	b = binary.BigEndian.AppendUint64(b, 0x1000)
	b = binary.BigEndian.AppendUint64(b, 0x1010)
	return binary.BigEndian.AppendUint64(b, 0)
}

func tuple(vals ...string) []byte {
	b := binary.BigEndian.AppendUint16(nil, uint16(len(vals)))
	for _, v := range vals {
		switch v {
		case "\x00null":
			b = append(b, 'n')
		case "\x00unchanged":
			b = append(b, 'u')
		default:
			b = append(b, 't')
			b = binary.BigEndian.AppendUint32(b, uint32(len(v)))
			b = append(b, v...)
		}
	}
	return b
}

func insertMsg(rel uint32, vals ...string) []byte {
	b := []byte{'I'}
	b = binary.BigEndian.AppendUint32(b, rel)
	return append(append(b, 'N'), tuple(vals...)...)
}

func updateMsg(rel uint32, old, nw []string) []byte {
	b := []byte{'U'}
	b = binary.BigEndian.AppendUint32(b, rel)
	b = append(append(b, 'O'), tuple(old...)...)
	return append(append(b, 'N'), tuple(nw...)...)
}

// frames joins messages as the fuzz input: each one behind its length.
func frames(msgs ...[]byte) []byte {
	var b []byte
	for _, m := range msgs {
		b = binary.BigEndian.AppendUint16(b, uint16(len(m)))
		b = append(b, m...)
	}
	return b
}

// FuzzPgoutputStream: any sequence of pgoutput messages is decoded or
// refused with an error; never a panic. Whatever is handed on is a change
// of the captured table (or an application event from the outbox) with a
// key and rows that marshal to valid JSON.
func FuzzPgoutputStream(f *testing.F) {
	tickets := relationMsg(1, "public", "tickets", "id", "status")
	users := relationMsg(2, "public", "users", "id", "password_hash")
	outbox := relationMsg(3, outboxSchema, outboxTable, "id", "event", "payload")
	f.Add(frames(tickets, beginMsg(7), insertMsg(1, "1", "open"), commitMsg()))
	f.Add(frames(tickets, users, beginMsg(7), insertMsg(2, "1", "secret"), updateMsg(1, []string{"1", "open"}, []string{"2", "closed"}), commitMsg()))
	f.Add(frames(outbox, beginMsg(8), insertMsg(3, "1", "notification", `{"a":1}`), insertMsg(3, "2", "x\ny", `{}`), commitMsg()))
	f.Add(frames(tickets, beginMsg(9), updateMsg(1, []string{"1", "\x00null"}, []string{"1", "\x00unchanged"}), commitMsg()))
	f.Add(frames(beginMsg(1), insertMsg(9, "1"), commitMsg(), commitMsg()))
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Fuzz(func(t *testing.T, input []byte) {
		s := NewSlot(SlotConfig{Logger: log, BatchSize: 4})
		s.table = [2]string{"public", "tickets"}
		sink := &recordSink{}
		st := newStream(s, nil, noDB{}, sink)
		for len(input) >= 2 {
			n := int(binary.BigEndian.Uint16(input))
			input = input[2:]
			if n > len(input) {
				n = len(input)
			}
			msg := input[:n]
			input = input[n:]
			if st.handle(context.Background(), msg) != nil {
				break
			}
		}
		// As run does when nothing more is buffered.
		_ = st.apply(context.Background())
		for _, c := range sink.changes {
			switch c.Op {
			case rowcast.OpMessage:
				if rowcast.CheckEventName(c.Event) != nil || (len(c.Payload) > 0 && !json.Valid(c.Payload)) {
					t.Fatalf("handed on a bad event %q %q", c.Event, c.Payload)
				}
				continue
			case rowcast.OpInsert, rowcast.OpUpdate, rowcast.OpDelete, rowcast.OpTruncate:
			default:
				t.Fatalf("handed on op %q", c.Op)
			}
			if c.Schema != "public" || c.Table != "tickets" {
				t.Fatalf("handed on a change of %s.%s", c.Schema, c.Table)
			}
			for _, r := range []rowcast.Row{c.Key, c.Row, c.Old} {
				if r == nil {
					continue
				}
				b, err := r.MarshalJSON()
				if err != nil || !json.Valid(b) {
					t.Fatalf("row %q does not marshal: %v", b, err)
				}
			}
		}
	})
}

// FuzzNotifyPayload: any NOTIFY payload becomes a change of the captured
// table, an application event with a valid name, or a counted rejection;
// never a panic. A truncate, which is checked against the catalog, is left
// to the integration tests.
func FuzzNotifyPayload(f *testing.F) {
	for _, s := range []string{
		`{"op":"insert","table":"public.tickets","xid":7,"key":{"id":1},"row":{"id":1,"status":"open"}}`,
		`{"op":"update","table":"public.tickets","xid":7,"key":{"id":1},"row":{"id":1},"old":{"status":"open"}}`,
		`{"op":"delete","table":"public.tickets","xid":7,"key":{"id":1},"old":{"status":"open"}}`,
		`{"op":"insert","table":"public.users","xid":7,"key":{"id":1},"row":{"id":1}}`,
		`{"op":"message","event":"notification","payload":{"a":1}}`,
		`{"op":"message","event":"x\ny","payload":{}}`,
		`{"op":"insert","table":"public.tickets","xid":7,"key":{"nope":1},"row":{"id":1}}`,
		`{"op":"insert","table":"public.tickets","xid":0,"key":{"id":1},"row":{"id":1}}`,
		`{`, `[]`, `null`, `{"op":7}`,
	} {
		f.Add(s)
	}
	l := NewListener(ListenerConfig{Table: Table{Schema: "public", Name: "tickets", Key: []string{"id"}},
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	f.Fuzz(func(t *testing.T, payload string) {
		var n notification
		if json.Unmarshal([]byte(payload), &n) == nil && n.Op == "truncate" {
			return // checked against the catalog
		}
		cs, reason, err := l.decode(context.Background(), []byte(payload), 0)
		if err != nil {
			if reason == "" {
				t.Fatalf("%q: error %v without a reason", payload, err)
			}
			return
		}
		for _, c := range cs {
			switch c.Op {
			case rowcast.OpMessage:
				if rowcast.CheckEventName(c.Event) != nil {
					t.Fatalf("%q: accepted event name %q", payload, c.Event)
				}
			case rowcast.OpInsert, rowcast.OpUpdate, rowcast.OpDelete:
				if c.Table != "tickets" || !sameColumns(c.Key, []string{"id"}) {
					t.Fatalf("%q: accepted %s.%s key %v", payload, c.Schema, c.Table, c.Key)
				}
			default:
				t.Fatalf("%q: op %q", payload, c.Op)
			}
		}
	})
}

// The seed builders make real pgoutput: a ticket insert and an outbox
// event come through, a users row does not.
func TestPgoutputSeeds(t *testing.T) {
	s := NewSlot(SlotConfig{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	s.table = [2]string{"public", "tickets"}
	sink := &recordSink{}
	st := newStream(s, nil, noDB{}, sink)
	for _, m := range [][]byte{relationMsg(1, "public", "tickets", "id", "status"), relationMsg(2, "public", "users", "id", "password_hash"),
		relationMsg(3, outboxSchema, outboxTable, "id", "event", "payload"),
		beginMsg(7), insertMsg(1, "1", "open"), insertMsg(2, "1", "secret"), insertMsg(3, "1", "notification", `{"a":1}`), commitMsg()} {
		if err := st.handle(context.Background(), m); err != nil {
			t.Fatal(err)
		}
	}
	// A commit is handed on with the transactions right behind it: here,
	// none (as run does when nothing more is buffered).
	if len(sink.changes) != 0 {
		t.Fatalf("handed on before the end of the buffered messages: %+v", sink.changes)
	}
	if err := st.apply(context.Background()); err != nil {
		t.Fatal(err)
	}
	if len(sink.changes) != 2 || sink.changes[0].Op != rowcast.OpInsert || sink.changes[1].Event != "notification" {
		t.Fatalf("handed on %+v", sink.changes)
	}
}

// Messages whose counts or lengths claim more than they hold are refused
// before anything allocates what they claim (found by fuzzing: a few
// bytes made pglogrepl allocate gigabytes).
func TestPgoutputCountsChecked(t *testing.T) {
	var d changeDecoder
	truncate := []byte{'T', 0xFF, 0xFF, 0xFF, 0xFF, 0}
	insert := append([]byte{'I', 0, 0, 0, 1, 'N', 0, 1, 't', 0xFF, 0xFF, 0xFF, 0xF0}, "x"...)
	for m, want := range map[string]string{string(truncate): "beyond", string(insert): "claims 4294967280 bytes"} {
		if _, err := d.parse([]byte(m)); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v", m, err)
		}
	}
	for _, m := range [][]byte{insertMsg(1, "1", "open"), updateMsg(1, []string{"1", "\x00null"}, []string{"2", "\x00unchanged"}),
		{'T', 0, 0, 0, 1, 0, 0, 0, 0, 9}, relationMsg(1, "public", "tickets", "id")} {
		if _, err := d.parse(m); err != nil {
			t.Errorf("%q refused: %v", m, err)
		}
	}
}

// FuzzDecodeNotification: the envelope decoder reads what json.Unmarshal
// reads, refuses what it refuses, and fills the same fields.
func FuzzDecodeNotification(f *testing.F) {
	for _, s := range []string{
		`{"op":"insert","table":"public.tickets","xid":7,"key":{"id":1},"row":{"id":1,"status":"open"}}`,
		`{"op":"update","table":"public.tickets","xid":7,"seq":2,"key":{"id":1},"oldkey":{"id":0},"row":{"id":1},"old":{"status":"open"}}`,
		`{"op":"message","event":"notification","payload":{"a": [1, 2]}}`,
		`{"OP":"insert","Xid":7,"ſeq":1,"xıd":9,"K\u0065y":{"id":1}}`,
		`{"op":"a","op":null,"xid":1,"xid":2,"row":{"x":1},"row":null}`,
		`{"op":7,"xid":"7","row":{}}`, `{"xid":-1}`, `{"xid":1.0}`, `{"xid":18446744073709551616}`, `{"key":[1]}`, `{"table":{"a":1}}`,
		`{"op":"\u00e9\ud800"}`, "{\"op\":\"\xff\"}", `{"payload":null}`, ` null `, `{`, `[]`, `"x"`, `7`, `{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		var want, got notification
		werr := json.Unmarshal(data, &want)
		gerr := decodeNotification(data, &got, 1, 4)
		if (werr == nil) != (gerr == nil) {
			t.Fatalf("%q: json.Unmarshal says %v, decodeNotification %v", data, werr, gerr)
		}
		if werr == nil && !reflect.DeepEqual(want, got) {
			t.Fatalf("%q:\njson.Unmarshal     %+v\ndecodeNotification %+v", data, want, got)
		}
	})
}

// FuzzCanonicalTime holds canonicalJSON's own reading of to_json's
// timestamps to the time.Parse reading it replaced: one result for any
// text, whether the fast path reads it or leaves it to the slow one.
func FuzzCanonicalTime(f *testing.F) {
	for _, s := range []string{
		"2026-01-02T03:04:05+00:00", "2026-01-02T03:04:05.5+05:30", "2026-06-30T23:59:59.123456-07:00",
		"1890-01-01T00:00:00+00:17:30", "2026-01-02T03:04:05", "2026-01-02T03:04:05.12", "0000-01-01T00:00:00",
		"2024-02-29T12:00:00Z", "2023-02-29T12:00:00Z", "2026-01-02T24:00:00", "9999-12-31T23:59:59-01:00",
		"2026-01-02T03:04:05.1234567891+01:00", "2026-01-02T03:04:05,5", "infinity", "2026-01-02T03:04:05+1",
	} {
		f.Add(s, true)
	}
	f.Fuzz(func(t *testing.T, s string, tz bool) {
		oid := uint32(pgtype.TimestampOID)
		if tz {
			oid = pgtype.TimestamptzOID
		}
		v := rowcast.AppendJSONString(nil, s)
		want := string(canonicalJSONSlow(oid, bytes.Clone(v)))
		got := string(canonicalJSON(oid, bytes.Clone(v)))
		if got != want {
			t.Fatalf("canonicalJSON(%s) = %s, time.Parse's reading gives %s", v, got, want)
		}
	})
}
