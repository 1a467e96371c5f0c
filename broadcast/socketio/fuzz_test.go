package socketio

import (
	"encoding/json"
	"testing"
	"unicode/utf8"

	"rowcast/broadcast"
)

// FuzzDecodePacket: any Engine.IO long-polling body splits into packets,
// and any Socket.IO packet decodes or is refused, never panics; an
// accepted EVENT has a non-empty array payload.
func FuzzDecodePacket(f *testing.F) {
	for _, s := range []string{`40`, `40{"token":"x"}`, `42["subscribe",{"filter":{"status":["open"]}}]`, `421["x"]`,
		`41`, `44{"message":"x"}`, `451-["x",{"_placeholder":true,"num":0}]`, `40/admin,`, "2\x1e3\x1e40", `4`, `42[`, `429999999999999999999["x"]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		for _, p := range eioDecodePayload(body) {
			if len(p) == 0 || p[0] != eioMessage {
				continue
			}
			pkt, err := decodePacket(p[1:])
			if err != nil {
				continue
			}
			if pkt.Type == typeEvent {
				var args []json.RawMessage
				if json.Unmarshal(pkt.Data, &args) != nil || len(args) == 0 {
					t.Fatalf("accepted EVENT %q", p)
				}
			}
			if pkt.Type == typeConnect {
				parseConnectPayload(pkt.Data)
			}
		}
	})
}

// FuzzEventPacket: any event rowcast sends encodes to a packet that
// decodes again to the same name, or to nothing for names socket.io-client
// reserves.
func FuzzEventPacket(f *testing.F) {
	f.Add("notification", []byte(`{"a":1}`))
	f.Add("connect", []byte(`null`))
	f.Add("x\"y", []byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, name string, data []byte) {
		if !json.Valid(data) || !utf8.ValidString(name) {
			return // the hub lets through only checked names and JSON payloads
		}
		p := encodeEvent(&broadcast.Event{Name: name, Data: data})
		if p == nil {
			if !reservedNames[name] {
				t.Fatalf("%q not encoded", name)
			}
			return
		}
		pkt, err := decodePacket(p[1:])
		if err != nil {
			t.Fatalf("%q does not decode: %v", p, err)
		}
		var args []json.RawMessage
		var got string
		if json.Unmarshal(pkt.Data, &args) != nil || json.Unmarshal(args[0], &got) != nil || got != name {
			t.Fatalf("%q decodes to %q", name, got)
		}
	})
}
