package socketio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"rowcast"
	"rowcast/broadcast"
	"rowcast/broadcast/wsframe"
)

// Engine.IO v4 packet types, as the first character of a packet.
const (
	eioOpen    = '0'
	eioClose   = '1'
	eioPing    = '2'
	eioPong    = '3'
	eioMessage = '4'
	eioUpgrade = '5'
	eioNoop    = '6'
)

// eioSeparator separates packets in an HTTP long-polling payload.
const eioSeparator = 0x1e

var (
	eioPingPacket  = []byte{eioPing}
	eioNoopPacket  = []byte{eioNoop}
	eioClosePacket = []byte{eioClose}
)

// eioOpenPacket is the handshake packet: 0{"sid":...,"upgrades":[...],
// "pingInterval":...,"pingTimeout":...,"maxPayload":...}.
func eioOpenPacket(sid string, upgrades []string, cfg Config) []byte {
	if upgrades == nil {
		upgrades = []string{}
	}
	b, _ := json.Marshal(struct {
		SID          string   `json:"sid"`
		Upgrades     []string `json:"upgrades"`
		PingInterval int64    `json:"pingInterval"`
		PingTimeout  int64    `json:"pingTimeout"`
		MaxPayload   int      `json:"maxPayload"`
	}{sid, upgrades, cfg.PingInterval.Milliseconds(), cfg.PingTimeout.Milliseconds(), cfg.MaxPayload})
	return append([]byte{eioOpen}, b...)
}

// eioEncodePayload joins packets for one long-polling response.
func eioEncodePayload(packets [][]byte) []byte {
	n := len(packets)
	for _, p := range packets {
		n += len(p)
	}
	b := make([]byte, 0, n)
	for i, p := range packets {
		if i > 0 {
			b = append(b, eioSeparator)
		}
		b = append(b, p...)
	}
	return b
}

// eioDecodePayload splits a long-polling request body into packets.
func eioDecodePayload(body []byte) [][]byte {
	return bytes.Split(body, []byte{eioSeparator})
}

// Socket.IO v5 packet types, as the first character of an Engine.IO
// message's data.
const (
	typeConnect      = 0
	typeDisconnect   = 1
	typeEvent        = 2
	typeAck          = 3
	typeConnectError = 4
	typeBinaryEvent  = 5
	typeBinaryAck    = 6
)

// packet is one decoded Socket.IO packet.
type packet struct {
	Type  int
	NSP   string
	ID    int64
	HasID bool
	// Data is the JSON payload, nil when the packet has none.
	Data json.RawMessage
}

// reservedNames are event names socket.io-client keeps for itself; a
// server may not emit them and a client may not send them.
var reservedNames = map[string]bool{
	"connect": true, "connect_error": true, "disconnect": true, "disconnecting": true,
	"newListener": true, "removeListener": true,
}

// errBinaryAttachment reports a packet with binary attachments, which rowcast
// does not accept.
var errBinaryAttachment = errors.New("binary attachments are not supported")

// decodePacket parses a Socket.IO packet as the reference parser does:
//
//	<type>[<attachments>-][<namespace>,][<ack id>][<JSON payload>]
//
// and checks the payload against the packet type.
func decodePacket(s []byte) (packet, error) {
	var p packet
	if len(s) == 0 {
		return p, errors.New("empty Socket.IO packet")
	}
	if s[0] < '0' || s[0] > '6' {
		return p, fmt.Errorf("unknown Socket.IO packet type %q", s[0])
	}
	p.Type = int(s[0] - '0')
	if p.Type == typeBinaryEvent || p.Type == typeBinaryAck {
		return p, errBinaryAttachment
	}
	i := 1
	p.NSP = "/"
	if i < len(s) && s[i] == '/' {
		end := bytes.IndexByte(s[i:], ',')
		if end < 0 {
			p.NSP = string(s[i:])
			i = len(s)
		} else {
			p.NSP = string(s[i : i+end])
			i += end + 1
		}
	}
	if i < len(s) && s[i] >= '0' && s[i] <= '9' {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		id, err := strconv.ParseInt(string(s[start:i]), 10, 64)
		if err != nil {
			return p, fmt.Errorf("bad ack id %q", s[start:i])
		}
		p.ID, p.HasID = id, true
	}
	if i < len(s) {
		data := s[i:]
		if !json.Valid(data) {
			return p, errors.New("Socket.IO packet payload is not JSON")
		}
		p.Data = data
	}
	if err := checkPayload(p); err != nil {
		return p, err
	}
	return p, nil
}

// checkPayload applies the reference parser's payload rules.
func checkPayload(p packet) error {
	first := firstByte(p.Data)
	switch p.Type {
	case typeConnect:
		if p.Data != nil && first != '{' {
			return errors.New("CONNECT payload must be an object")
		}
	case typeDisconnect:
		if p.Data != nil {
			return errors.New("DISCONNECT takes no payload")
		}
	case typeConnectError:
		if p.Data == nil || (first != '{' && first != '"') {
			return errors.New("CONNECT_ERROR payload must be an object or a string")
		}
	case typeEvent:
		var args []json.RawMessage
		if first != '[' || json.Unmarshal(p.Data, &args) != nil || len(args) == 0 {
			return errors.New("EVENT payload must be a non-empty array")
		}
		var name string
		if err := json.Unmarshal(args[0], &name); err != nil {
			var n float64
			if json.Unmarshal(args[0], &n) != nil {
				return errors.New("EVENT name must be a string or a number")
			}
		} else if reservedNames[name] {
			return fmt.Errorf("%q is a reserved event name", name)
		}
	case typeAck:
		if first != '[' {
			return errors.New("ACK payload must be an array")
		}
	}
	return nil
}

func firstByte(b []byte) byte {
	b = bytes.TrimLeft(b, " \t\r\n")
	if len(b) == 0 {
		return 0
	}
	return b[0]
}

// encodePacket builds the Engine.IO message carrying a Socket.IO packet
// (no ack id, no attachments): 4<type>[<nsp>,][<data>].
func encodePacket(typ int, nsp string, data []byte) []byte {
	b := make([]byte, 0, len(data)+len(nsp)+3)
	b = append(b, eioMessage, byte('0'+typ))
	if nsp != "" && nsp != "/" {
		b = append(b, nsp...)
		b = append(b, ',')
	}
	return append(b, data...)
}

// connectReply is the CONNECT packet granting the main namespace.
func connectReply(sid, pid string) []byte {
	b, _ := json.Marshal(struct {
		SID string `json:"sid"`
		PID string `json:"pid"`
	}{sid, pid})
	return encodePacket(typeConnect, "/", b)
}

// connectErrorPacket is a CONNECT_ERROR packet: 44[<nsp>,]{"message":"..."}.
func connectErrorPacket(nsp, msg string) []byte {
	b, _ := json.Marshal(map[string]string{"message": msg})
	return encodePacket(typeConnectError, nsp, b)
}

// eventPacket encodes an event for the main namespace:
// 42["name",data] or, for events with an ID, 42["name",data,"offset"]:
// socket.io-client keeps the last string argument as its offset for
// connection state recovery. It returns nil for names socket.io-client
// reserves, which cannot be delivered as events.
var eventPacket = broadcast.NewEncoding("socketio", encodeEvent)

// eventFrame is the event packet as a WebSocket text frame, built once
// and written as it is to every client on the WebSocket transport (nil
// when the packet is).
var eventFrame = broadcast.NewEncoding("socketio-ws", func(e *broadcast.Event) []byte {
	if reservedNames[e.Name] {
		return nil
	}
	return wsframe.Seal(wsframe.OpText, appendEvent(wsframe.Reserve(eventSize(e)), e))
})

// encodeEvent builds the packet once per event; every Socket.IO client
// shares the bytes (read only).
func encodeEvent(e *broadcast.Event) []byte {
	if reservedNames[e.Name] {
		return nil
	}
	return appendEvent(make([]byte, 0, eventSize(e)), e)
}

// eventSize is room for 42["name",data,"<id, at most 43>"].
func eventSize(e *broadcast.Event) int { return len(e.Data) + 2*len(e.Name) + 64 }

// appendEvent appends e's event packet to b.
func appendEvent(b []byte, e *broadcast.Event) []byte {
	data := e.Data
	if len(data) == 0 {
		data = json.RawMessage("null")
	}
	b = append(b, eioMessage, '0'+typeEvent, '[')
	b = rowcast.AppendJSONString(b, e.Name)
	b = append(b, ',')
	b = append(b, data...)
	if e.HasID {
		b = append(b, ",\""...)
		b = e.ID.Append(b)
		b = append(b, '"')
	}
	return append(b, ']')
}

// connectPayload is what rowcast reads from a CONNECT payload: the
// socket.io-client auth option, plus pid and offset that socket.io-client
// adds when it reconnects after a connection with state recovery.
type connectPayload struct {
	Token  string
	Filter json.RawMessage
	PID    string
	Offset string
}

func parseConnectPayload(data json.RawMessage) connectPayload {
	var p connectPayload
	if len(data) == 0 {
		return p
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(data, &m) != nil {
		return p
	}
	str := func(k string) string {
		var s string
		_ = json.Unmarshal(m[k], &s)
		return s
	}
	p.Token, p.PID, p.Offset = str("token"), str("pid"), str("offset")
	p.Filter = m["filter"]
	return p
}

// validPID: pids rowcast hands out are short URL-safe strings; others
// are not echoed back.
func validPID(pid string) bool {
	if len(pid) == 0 || len(pid) > 64 {
		return false
	}
	for i := 0; i < len(pid); i++ {
		c := pid[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
