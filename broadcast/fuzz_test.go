package broadcast

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

var fuzzColumns = []string{"status", "priority"}

// FuzzParseFilterQuery: any query string gives a filter within the caps or
// a FilterError; never a panic.
func FuzzParseFilterQuery(f *testing.F) {
	for _, s := range []string{"status=open,closed&priority=high", "status=", "nosuch=1", "status=a&status=b",
		"lastEventId=x&status=%00", "status=" + string(make([]byte, 10))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		flt, err := ParseFilterQuery(q, fuzzColumns)
		if err != nil {
			if _, ok := err.(*FilterError); !ok {
				t.Fatalf("error of type %T: %v", err, err)
			}
			return
		}
		if flt.check() != nil {
			t.Fatalf("accepted a filter over the caps: %v", flt)
		}
		flt.Matches(nil)
	})
}

// FuzzParseFilterJSON: the same for the JSON form (subscribe messages,
// Socket.IO's auth).
func FuzzParseFilterJSON(f *testing.F) {
	for _, s := range []string{`{"status":["open","closed"],"priority":"high"}`, `null`, `{}`, `[]`, `{"status":[1,null,true,{"a":1}]}`,
		`{"nosuch":1}`, `{"status":`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		flt, err := ParseFilterJSON(raw, fuzzColumns)
		if err != nil {
			return
		}
		if flt.check() != nil {
			t.Fatalf("accepted a filter over the caps: %v", flt)
		}
		if _, err := json.Marshal(flt); err != nil {
			t.Fatal(err)
		}
	})
}

// FuzzClientMessage: whatever a client sends on /ws, the reply is an event
// whose data is valid JSON.
func FuzzClientMessage(f *testing.F) {
	for _, s := range []string{`{"type":"subscribe","filter":{"status":["open"]}}`, `{"type":"x"}`, `{`, `"`, `{"type":"subscribe","filter":7}`} {
		f.Add([]byte(s))
	}
	hub := NewHub(HubConfig{Names: NamesFor("ticket", ProfileColon)})
	g := NewGate(GateConfig{Hub: hub, FilterColumns: fuzzColumns, LiveUpdates: true})
	sess := g.NewSession("ws", Identity{}, nil)
	f.Fuzz(func(t *testing.T, data []byte) {
		ev := g.ClientMessage(sess, data)
		if ev == nil || !json.Valid(ev.Data) || !json.Valid(ev.Frame()) {
			t.Fatalf("reply to %q: %+v", data, ev)
		}
	})
}

// FuzzToken: whatever carries a token (cookie, header, query), finding and
// checking it never panics, and a token passes only if its signature is
// the key's HMAC-SHA256 of its header and payload (checked here without
// the JWT library).
func FuzzToken(f *testing.F) {
	a := NewAuth("fuzz-secret", "token")
	good, _ := a.Sign(map[string]any{"sub": "u"})
	for _, s := range []string{good, "", "abc.def", "Bearer x", "eyJhbGciOiJub25lIn0.e30.", good + "x"} {
		f.Add(s, "Bearer "+s, "access_token="+url.QueryEscape(s))
	}
	f.Fuzz(func(t *testing.T, cookie, header, query string) {
		r := &http.Request{Header: http.Header{}, URL: &url.URL{RawQuery: query}}
		if cookie != "" {
			r.Header.Set("Cookie", "token="+cookie)
		}
		r.Header.Set("Authorization", header)
		tok := a.TokenFrom(r)
		if _, err := a.Verify(tok); err != nil {
			return
		}
		parts := strings.Split(tok, ".")
		if len(parts) != 3 {
			t.Fatalf("verified %q, which is not three parts", tok)
		}
		mac := hmac.New(sha256.New, []byte("fuzz-secret"))
		mac.Write([]byte(parts[0] + "." + parts[1]))
		sig, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(parts[2], "="))
		if err != nil || !hmac.Equal(sig, mac.Sum(nil)) {
			t.Fatalf("verified %q without the key's signature", tok)
		}
	})
}
