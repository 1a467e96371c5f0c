package cdc

import (
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/jackc/pgx/v5/pgtype"

	"rowcast"
)

// sessionParams are set on every connection whose text output rowcast
// parses. pgoutput and simple-protocol queries send values through the
// types' output functions, whose result depends on these settings.
var sessionParams = map[string]string{
	"DateStyle":     "ISO, YMD",
	"IntervalStyle": "postgres",
	"TimeZone":      "UTC",
	"bytea_output":  "hex",
}

// valueDecoder turns PostgreSQL text-format values into JSON. It is used by
// one goroutine at a time (pgtype.Map is not safe for concurrent use).
type valueDecoder struct {
	types *pgtype.Map
}

func newValueDecoder() *valueDecoder {
	return &valueDecoder{types: pgtype.NewMap()}
}

// timeLayout is RFC 3339 with microseconds, trailing zeros dropped, as Go's
// json encoding of time.Time writes it. timestamp without time zone has no
// offset in PostgreSQL, but RFC 3339 requires one, so it is written as if it
// were UTC ("Z"), which keeps the wall-clock digits unchanged.
const timeLayout = "2006-01-02T15:04:05.999999Z07:00"

// decode returns the JSON for one text-format value of type oid. Types it
// does not know (enums, domains over unknown types, geometric types, ...)
// become a JSON string of their text, so no value is ever lost.
func (d *valueDecoder) decode(oid uint32, text []byte) (json.RawMessage, error) {
	switch oid {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID,
		pgtype.QCharOID, pgtype.UUIDOID, pgtype.DateOID, pgtype.XMLOID:
		// Dates are ISO (YYYY-MM-DD) because of sessionParams; "infinity" and
		// BC dates stay as PostgreSQL writes them.
		return appendJSONString(make([]byte, 0, len(text)+2), text), nil
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID, pgtype.XIDOID, pgtype.CIDOID:
		if !isInteger(text) {
			return nil, fmt.Errorf("malformed integer %q", text)
		}
		return copyBytes(text), nil
	case pgtype.BoolOID:
		switch string(text) {
		case "t":
			return json.RawMessage("true"), nil
		case "f":
			return json.RawMessage("false"), nil
		}
		return nil, fmt.Errorf("malformed boolean %q", text)
	case pgtype.Float4OID, pgtype.Float8OID, pgtype.NumericOID:
		// PostgreSQL writes finite floats and numerics in a form that is
		// also a JSON number ("1e+20", "-0", "123.4500"); numeric keeps all
		// its digits this way. NaN and the infinities have no JSON number.
		switch string(text) {
		case "NaN", "Infinity", "-Infinity":
			return appendJSONString(nil, text), nil
		}
		if !json.Valid(text) {
			return nil, fmt.Errorf("malformed number %q", text)
		}
		return copyBytes(text), nil
	case pgtype.JSONOID, pgtype.JSONBOID:
		// Passed through to keep big numbers and key order exactly as
		// stored. PostgreSQL has validated it; checked again because one
		// bad value would break the frame of every client it goes to.
		if !json.Valid(text) {
			return nil, fmt.Errorf("malformed json value %q", clip(text, 64))
		}
		return copyBytes(text), nil
	case pgtype.TimestamptzOID, pgtype.TimestampOID:
		return d.timestamp(oid, text)
	case pgtype.ByteaOID:
		return d.bytea(text)
	}
	if t, ok := d.types.TypeForOID(oid); ok {
		if ac, ok := t.Codec.(*pgtype.ArrayCodec); ok && ac.ElementType != nil {
			delim := ac.Delimiter
			if delim == 0 {
				delim = ','
			}
			return d.array(ac.ElementType.OID, delim, text)
		}
	}
	return appendJSONString(make([]byte, 0, len(text)+2), text), nil
}

// appendDecode appends the JSON of one text-format value to out, as
// decode returns it. The common types are written straight into out, so
// that a tuple's values share one buffer (decodeTuple) instead of one
// allocation each; the others go through decode.
func (d *valueDecoder) appendDecode(out []byte, oid uint32, text []byte) ([]byte, error) {
	switch oid {
	case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID,
		pgtype.QCharOID, pgtype.UUIDOID, pgtype.DateOID, pgtype.XMLOID:
		return appendJSONString(out, text), nil
	case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.OIDOID, pgtype.XIDOID, pgtype.CIDOID:
		if !isInteger(text) {
			return out, fmt.Errorf("malformed integer %q", text)
		}
		return append(out, text...), nil
	case pgtype.BoolOID:
		switch string(text) {
		case "t":
			return append(out, "true"...), nil
		case "f":
			return append(out, "false"...), nil
		}
	case pgtype.JSONOID, pgtype.JSONBOID:
		if json.Valid(text) {
			return append(out, text...), nil
		}
	case pgtype.TimestamptzOID, pgtype.TimestampOID:
		if b, ok := appendFastTimestamp(out, oid, text); ok {
			return b, nil
		}
	}
	v, err := d.decode(oid, text)
	if err != nil {
		return out, err
	}
	return append(out, v...), nil
}

func (d *valueDecoder) timestamp(oid uint32, text []byte) (json.RawMessage, error) {
	if out, ok := fastTimestamp(oid, text); ok {
		return out, nil
	}
	t, ok := d.types.TypeForOID(oid)
	if !ok {
		return nil, fmt.Errorf("no codec for type %d", oid)
	}
	v, err := t.Codec.DecodeValue(d.types, oid, pgtype.TextFormatCode, text)
	if err != nil {
		return nil, err
	}
	switch v := v.(type) {
	case time.Time:
		if y := v.Year(); y < 0 || y > 9999 {
			// RFC 3339 has four-digit years only; keep PostgreSQL's text.
			return appendJSONString(nil, text), nil
		}
		b := make([]byte, 0, 34)
		b = append(b, '"')
		b = rowcast.AppendUTC(b, v, 6)
		return append(b, '"'), nil
	case pgtype.InfinityModifier:
		if v == pgtype.Infinity {
			return json.RawMessage(`"infinity"`), nil
		}
		return json.RawMessage(`"-infinity"`), nil
	}
	return nil, fmt.Errorf("unexpected %T decoding type %d", v, oid)
}

// fastTimestamp rewrites the common output forms, "2026-11-23
// 02:30:31.123456+00" (timestamptz under TimeZone=UTC) and "2026-11-23
// 02:30:31" (timestamp), without parsing them; PostgreSQL already drops
// trailing zeros of the fraction. Anything else takes the codec path.
func fastTimestamp(oid uint32, text []byte) (json.RawMessage, bool) {
	n, ok := fastTimestampLen(oid, text)
	if !ok {
		return nil, false
	}
	return appendTimestampText(make([]byte, 0, n+3), text[:n]), true
}

// appendFastTimestamp is fastTimestamp appending to out.
func appendFastTimestamp(out []byte, oid uint32, text []byte) ([]byte, bool) {
	n, ok := fastTimestampLen(oid, text)
	if !ok {
		return out, false
	}
	return appendTimestampText(out, text[:n]), true
}

// fastTimestampLen checks a timestamp's text for the fast path and
// returns the length of its date and time (without "+00").
func fastTimestampLen(oid uint32, text []byte) (int, bool) {
	n := len(text)
	if oid == pgtype.TimestamptzOID {
		if n < 22 || string(text[n-3:]) != "+00" {
			return 0, false
		}
		n -= 3
	}
	if n < 19 || n > 26 || (n > 19 && (text[19] != '.' || n == 20)) {
		return 0, false
	}
	for i := 0; i < n; i++ {
		c := text[i]
		switch i {
		case 4, 7:
			if c != '-' {
				return 0, false
			}
		case 10:
			if c != ' ' {
				return 0, false
			}
		case 13, 16:
			if c != ':' {
				return 0, false
			}
		case 19:
		default:
			if c < '0' || c > '9' {
				return 0, false
			}
		}
	}
	return n, true
}

// appendTimestampText appends "YYYY-MM-DD HH:MM:SS[.ffffff]" as the JSON
// string "YYYY-MM-DDTHH:MM:SS[.ffffff]Z".
func appendTimestampText(out, text []byte) []byte {
	start := len(out)
	out = append(out, '"')
	out = append(out, text...)
	out[start+11] = 'T'
	return append(out, 'Z', '"')
}

func (d *valueDecoder) bytea(text []byte) (json.RawMessage, error) {
	var raw []byte
	if len(text) >= 2 && text[0] == '\\' && text[1] == 'x' {
		raw = make([]byte, hex.DecodedLen(len(text)-2))
		if _, err := hex.Decode(raw, text[2:]); err != nil {
			return nil, fmt.Errorf("malformed bytea: %w", err)
		}
	} else {
		// Escape format, if a server overrides bytea_output.
		v, err := pgtype.ByteaCodec{}.DecodeValue(d.types, pgtype.ByteaOID, pgtype.TextFormatCode, text)
		if err != nil {
			return nil, err
		}
		raw, _ = v.([]byte)
	}
	out := make([]byte, base64.StdEncoding.EncodedLen(len(raw))+2)
	out[0] = '"'
	base64.StdEncoding.Encode(out[1:], raw)
	out[len(out)-1] = '"'
	return out, nil
}

// array converts an array literal ({1,2,NULL}, {{"a b",c},{d,e}},
// [0:1]={x,y}) into nested JSON arrays, each element decoded as elem.
func (d *valueDecoder) array(elem uint32, delim byte, text []byte) (json.RawMessage, error) {
	p := arrayParser{d: d, elem: elem, delim: delim, s: text}
	if len(text) > 0 && text[0] == '[' {
		// Explicit lower bounds carry no information JSON can express.
		i := strings.IndexByte(string(text), '=')
		if i < 0 {
			return nil, fmt.Errorf("malformed array %q", text)
		}
		p.i = i + 1
	}
	out, err := p.parse(nil, 1)
	if err != nil {
		return nil, fmt.Errorf("malformed array %q: %w", clip(text, 64), err)
	}
	if p.i != len(p.s) {
		return nil, fmt.Errorf("malformed array %q: trailing text", clip(text, 64))
	}
	return out, nil
}

type arrayParser struct {
	d     *valueDecoder
	elem  uint32
	delim byte
	s     []byte
	i     int
}

func (p *arrayParser) skipSpace() {
	for p.i < len(p.s) && isSpace(p.s[p.i]) {
		p.i++
	}
}

// maxArrayDims is PostgreSQL's limit on array dimensions (MAXDIM): deeper
// nesting is not an array PostgreSQL wrote, and parsing it recursively
// could exhaust the stack, which no recover catches.
const maxArrayDims = 6

// parse reads one {...} level at p.i, the depth-th, and appends it as a
// JSON array.
func (p *arrayParser) parse(out []byte, depth int) ([]byte, error) {
	if depth > maxArrayDims {
		return nil, fmt.Errorf("more than %d dimensions", maxArrayDims)
	}
	p.skipSpace()
	if p.i >= len(p.s) || p.s[p.i] != '{' {
		return nil, fmt.Errorf("want '{' at %d", p.i)
	}
	p.i++
	out = append(out, '[')
	p.skipSpace()
	if p.i < len(p.s) && p.s[p.i] == '}' {
		p.i++
		return append(out, ']'), nil
	}
	for n := 0; ; n++ {
		if n > 0 {
			out = append(out, ',')
		}
		p.skipSpace()
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("unterminated")
		}
		var err error
		switch p.s[p.i] {
		case '{':
			out, err = p.parse(out, depth+1)
		case '"':
			out, err = p.quoted(out)
		default:
			out, err = p.unquoted(out)
		}
		if err != nil {
			return nil, err
		}
		p.skipSpace()
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("unterminated")
		}
		switch p.s[p.i] {
		case '}':
			p.i++
			return append(out, ']'), nil
		case p.delim:
			p.i++
		default:
			return nil, fmt.Errorf("unexpected %q at %d", p.s[p.i], p.i)
		}
	}
}

func (p *arrayParser) quoted(out []byte) ([]byte, error) {
	p.i++ // opening quote
	var buf []byte
	for {
		if p.i >= len(p.s) {
			return nil, fmt.Errorf("unterminated quoted element")
		}
		c := p.s[p.i]
		p.i++
		switch c {
		case '\\':
			if p.i >= len(p.s) {
				return nil, fmt.Errorf("unterminated escape")
			}
			buf = append(buf, p.s[p.i])
			p.i++
		case '"':
			return p.element(out, buf)
		default:
			buf = append(buf, c)
		}
	}
}

func (p *arrayParser) unquoted(out []byte) ([]byte, error) {
	start := p.i
	for p.i < len(p.s) && p.s[p.i] != p.delim && p.s[p.i] != '}' {
		p.i++
	}
	tok := p.s[start:p.i]
	for len(tok) > 0 && isSpace(tok[len(tok)-1]) {
		tok = tok[:len(tok)-1]
	}
	if strings.EqualFold(string(tok), "NULL") {
		return append(out, "null"...), nil
	}
	return p.element(out, tok)
}

func (p *arrayParser) element(out, text []byte) ([]byte, error) {
	v, err := p.d.decode(p.elem, text)
	if err != nil {
		return nil, err
	}
	return append(out, v...), nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f'
}

func isInteger(b []byte) bool {
	if len(b) > 0 && b[0] == '-' {
		b = b[1:]
	}
	if len(b) == 0 || (b[0] == '0' && len(b) > 1) {
		return false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// copyBytes copies because the caller's buffer belongs to the protocol
// reader and a Change outlives it.
func copyBytes(b []byte) json.RawMessage {
	out := make([]byte, len(b))
	copy(out, b)
	return out
}

func clip(b []byte, n int) []byte {
	if len(b) > n {
		return b[:n]
	}
	return b
}

const hexDigits = "0123456789abcdef"

// jsonSafe marks the ASCII bytes that go into a JSON string as they are.
var jsonSafe = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\'
	}
	return t
}()

// appendJSONString appends s as a JSON string. Unlike encoding/json it does
// not escape <, > and &, which JSON does not require; invalid UTF-8 becomes
// U+FFFD as encoding/json does.
func appendJSONString(out, s []byte) []byte {
	out = append(out, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if jsonSafe[c] {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			out = append(out, s[start:i]...)
			switch c {
			case '"', '\\':
				out = append(out, '\\', c)
			case '\n':
				out = append(out, '\\', 'n')
			case '\r':
				out = append(out, '\\', 'r')
			case '\t':
				out = append(out, '\\', 't')
			default:
				out = append(out, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			out = append(out, s[start:i]...)
			out = append(out, `\ufffd`...)
			i += size
			start = i
			continue
		}
		i += size
	}
	out = append(out, s[start:]...)
	return append(out, '"')
}
