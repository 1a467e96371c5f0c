package cdc

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"

	"rowcast"
)

// decodeNotification decodes the trigger's JSON envelope into n as
// json.Unmarshal would, member for member (names matched without regard
// to case, the last of a repeated name winning, null leaving a member as
// it is, a value of the wrong type an error), but without reflection:
// every change captured in notify mode goes through it.
// FuzzDecodeNotification holds it to json.Unmarshal.
//
// The rows' values are slices of data, which the caller hands over; keys
// and rows are sized for keyCols and rowCols columns.
func decodeNotification(data []byte, n *notification, keyCols, rowCols int) error {
	if !rowcast.ValidJSON(data) {
		return json.Unmarshal(data, n) // its syntax error
	}
	switch bytes.TrimLeft(data, " \t\r\n")[0] {
	case '{':
	case 'n':
		return nil // null
	default:
		return json.Unmarshal(data, n) // its type error
	}
	var typeErr error
	err := rowcast.EachMember(data, func(key, v []byte) error {
		switch {
		case bytes.EqualFold(key, []byte("op")):
			setString(&n.Op, key, v, &typeErr)
		case bytes.EqualFold(key, []byte("table")):
			setString(&n.Table, key, v, &typeErr)
		case bytes.EqualFold(key, []byte("event")):
			setString(&n.Event, key, v, &typeErr)
		case bytes.EqualFold(key, []byte("xid")):
			setUint(&n.Xid, key, v, &typeErr)
		case bytes.EqualFold(key, []byte("seq")):
			setUint(&n.Seq, key, v, &typeErr)
		case bytes.EqualFold(key, []byte("key")):
			return setRow(&n.Key, v, keyCols)
		case bytes.EqualFold(key, []byte("oldkey")):
			return setRow(&n.OldKey, v, keyCols)
		case bytes.EqualFold(key, []byte("old")):
			return setRow(&n.Old, v, rowCols)
		case bytes.EqualFold(key, []byte("row")):
			return setRow(&n.Row, v, rowCols)
		case bytes.EqualFold(key, []byte("payload")):
			n.Payload = append(n.Payload[:0:0], v...)
		}
		return nil
	})
	if err != nil {
		return err
	}
	return typeErr
}

// setRow stores a row whose values are slices of v.
func setRow(dst *rowcast.Row, v []byte, columns int) error {
	r, err := rowcast.ParseRow(v, columns)
	if err != nil {
		return err
	}
	*dst = r
	return nil
}

// setString stores a JSON string's text; null leaves it, another type is
// the first type error if there is none yet.
func setString(dst *string, key, v []byte, typeErr *error) {
	switch v[0] {
	case '"':
		*dst = rowcast.JSONText(v)
	case 'n':
	default:
		noteTypeErr(typeErr, key, v, "a string")
	}
}

// setUint stores a JSON number that is a uint64, as setString.
func setUint(dst *uint64, key, v []byte, typeErr *error) {
	switch {
	case v[0] == 'n':
	case v[0] == '-' || (v[0] >= '0' && v[0] <= '9'):
		u, err := strconv.ParseUint(string(v), 10, 64)
		if err != nil {
			noteTypeErr(typeErr, key, v, "an unsigned integer")
			return
		}
		*dst = u
	default:
		noteTypeErr(typeErr, key, v, "an unsigned integer")
	}
}

func noteTypeErr(typeErr *error, key, v []byte, want string) {
	if *typeErr == nil {
		*typeErr = fmt.Errorf("%q is %s, want %s", key, truncate(string(v), 40), want)
	}
}
