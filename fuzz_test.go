package rowcast

import "testing"

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
