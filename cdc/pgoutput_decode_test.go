package cdc

import (
	"encoding/binary"
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/jackc/pglogrepl"
)

func deleteMsg(rel uint32, tag byte, old ...string) []byte {
	b := []byte{'D'}
	b = binary.BigEndian.AppendUint32(b, rel)
	return append(append(b, tag), tuple(old...)...)
}

// keyUpdateMsg is an UPDATE whose old tuple is the key ('K') or that has
// none (tag 0).
func keyUpdateMsg(rel uint32, tag byte, old, nw []string) []byte {
	b := []byte{'U'}
	b = binary.BigEndian.AppendUint32(b, rel)
	if tag != 0 {
		b = append(append(b, tag), tuple(old...)...)
	}
	return append(append(b, 'N'), tuple(nw...)...)
}

// sameAsPglogrepl reports how changeDecoder's result for b differs from
// pglogrepl.Parse's, when both decode it.
func sameAsPglogrepl(t *testing.T, d *changeDecoder, b []byte) (ours pglogrepl.Message, ok bool, oursErr, theirsErr error) {
	t.Helper()
	ours, ok, oursErr = d.decode(b)
	if !ok || oursErr != nil {
		// pglogrepl is asked only about messages whose lengths the
		// decoder found in bounds: it allocates what they claim.
		return
	}
	var theirs pglogrepl.Message
	func() {
		defer func() {
			if r := recover(); r != nil {
				theirsErr = fmt.Errorf("pglogrepl panicked: %v", r)
			}
		}()
		theirs, theirsErr = pglogrepl.Parse(b)
	}()
	if theirsErr != nil {
		return
	}
	got := reflect.ValueOf(ours).Elem().Interface()
	want := reflect.ValueOf(theirs).Elem().Interface()
	if !reflect.DeepEqual(normalize(got), normalize(want)) {
		t.Fatalf("%q decodes to\n%#v\npglogrepl:\n%#v", b, got, want)
	}
	return
}

// normalize drops the difference between a tuple without columns as the
// decoder keeps it (an empty slice) and as pglogrepl returns it (nil).
func normalize(m any) any {
	fix := func(tp *pglogrepl.TupleData) *pglogrepl.TupleData {
		if tp == nil || len(tp.Columns) > 0 {
			return tp
		}
		c := *tp
		c.Columns = nil
		return &c
	}
	switch m := m.(type) {
	case pglogrepl.InsertMessage:
		m.Tuple = fix(m.Tuple)
		return m
	case pglogrepl.UpdateMessage:
		m.OldTuple, m.NewTuple = fix(m.OldTuple), fix(m.NewTuple)
		return m
	case pglogrepl.DeleteMessage:
		m.OldTuple = fix(m.OldTuple)
		return m
	}
	return m
}

// The change messages decode to what pglogrepl.Parse makes of them, one
// decoder reused across messages of every size; malformed ones are
// errors.
func TestChangeDecoder(t *testing.T) {
	begin := beginMsg(42)
	binary.BigEndian.PutUint64(begin[9:], 817_000_123_456_789) // a commit time
	commit := commitMsg()
	binary.BigEndian.PutUint64(commit[18:], 817_000_123_456_789)
	valid := [][]byte{
		begin,
		commit,
		insertMsg(1, "1", "open", strings.Repeat("x", 3000)),
		insertMsg(1, "2"),
		insertMsg(7),
		insertMsg(1, "\x00null", "", "\x00unchanged", "4"),
		updateMsg(1, []string{"1", "open"}, []string{"1", "closed"}),
		keyUpdateMsg(1, 'K', []string{"1", "\x00null"}, []string{"2", "closed", "\x00unchanged"}),
		keyUpdateMsg(1, 0, nil, []string{"3", "closed"}),
		deleteMsg(1, 'O', "1", "open"),
		deleteMsg(1, 'K', "1", "\x00null"),
		insertMsg(1, "1", "open", strings.Repeat("x", 3000)),
	}
	var d changeDecoder
	for _, m := range valid {
		msg, ok, err, theirsErr := sameAsPglogrepl(t, &d, m)
		if !ok || err != nil || msg == nil {
			t.Fatalf("%q: ok %v, %v", m, ok, err)
		}
		if theirsErr != nil && m[0] != 'I' { // pglogrepl refuses an INSERT of no columns
			t.Fatalf("%q: pglogrepl: %v", m, theirsErr)
		}
	}
	if got := d.begin.CommitTime.UTC().Format("2006-01-02T15:04:05.999999"); got != "2025-11-21T00:28:43.456789" {
		t.Errorf("commit time %s", got)
	}

	binaryCol := insertMsg(1, "ab")
	binaryCol[8] = 'b'
	if _, _, err := d.decode(binaryCol); err != nil {
		t.Errorf("binary column: %v", err)
	}
	if c := d.insert.Tuple.Columns[0]; c.DataType != 'b' || string(c.Data) != "ab" {
		t.Errorf("binary column decoded as %+v", c)
	}

	malformed := map[string][]byte{
		"short begin":           begin[:20],
		"short commit":          commit[:25],
		"insert without tuple":  insertMsg(1)[:6],
		"insert tagged K":       append([]byte{'I', 0, 0, 0, 1, 'K'}, tuple("1")...),
		"column count too high": append([]byte{'I', 0, 0, 0, 1, 'N'}, 0xFF, 0xFF, 't'),
		"length too high":       append([]byte{'I', 0, 0, 0, 1, 'N', 0, 1, 't', 0xFF, 0xFF, 0xFF, 0xF0}, "x"...),
		"length cut":            []byte{'I', 0, 0, 0, 1, 'N', 0, 1, 't', 0, 0},
		"column missing":        []byte{'I', 0, 0, 0, 1, 'N', 0, 2, 'n'},
		"update without new":    updateMsg(1, []string{"1"}, []string{"1"})[:5+1+7],
		"update new tagged O":   append(append([]byte{'U', 0, 0, 0, 1, 'K'}, tuple("1")...), append([]byte{'O'}, tuple("1")...)...),
		"update old cut":        []byte{'U', 0, 0, 0, 1, 'O', 0, 3, 'n'},
		"delete tagged N":       deleteMsg(1, 'N', "1"),
		"delete without tuple":  {'D', 0, 0, 0, 1},
	}
	for name, m := range malformed {
		if _, ok, err := d.decode(m); !ok || err == nil {
			t.Errorf("%s (%q): ok %v, err %v", name, m, ok, err)
		}
	}
	for _, m := range [][]byte{nil, {'R'}, {'T', 0}, {'M'}, {'Y'}, {'O'}} {
		if _, ok, _ := d.decode(m); ok {
			t.Errorf("%q taken as a change message", m)
		}
	}
}

// FuzzChangeDecoder: any sequence of messages through one decoder is
// decoded or refused, never a panic, and whatever both it and pglogrepl
// decode, they decode alike.
func FuzzChangeDecoder(f *testing.F) {
	f.Add(frames(beginMsg(7), insertMsg(1, "1", "open"), commitMsg()))
	f.Add(frames(updateMsg(1, []string{"1", "open"}, []string{"2", "closed"}), insertMsg(1, "1")))
	f.Add(frames(keyUpdateMsg(1, 'K', []string{"1", "\x00null"}, []string{"2", "\x00unchanged"}), deleteMsg(1, 'O', "1", "x")))
	f.Add(frames(deleteMsg(1, 'K', "1"), insertMsg(1, "\x00null", "", "abc")))
	f.Fuzz(func(t *testing.T, input []byte) {
		var d changeDecoder
		for len(input) >= 2 {
			n := min(int(binary.BigEndian.Uint16(input)), len(input)-2)
			msg := input[2 : 2+n]
			input = input[2+n:]
			sameAsPglogrepl(t, &d, msg)
		}
	})
}
