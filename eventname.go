package rowcast

import "fmt"

// MaxEventNameLen is the longest application event name rowcast accepts.
const MaxEventNameLen = 64

// CheckEventName reports whether name may be the name of an application
// event (rowcast.broadcast() in SQL): 1 to 64 characters from letters,
// digits, '_', '.', ':' and '-'. The set keeps names safe in every wire
// format (an SSE "event:" line, a JSON string, a metric label) without
// escaping; the SQL function applies the same rule.
func CheckEventName(name string) error {
	if name == "" {
		return fmt.Errorf("event name is empty")
	}
	if len(name) > MaxEventNameLen {
		return fmt.Errorf("event name is %d bytes long; at most %d are allowed", len(name), MaxEventNameLen)
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == ':' || c == '-') {
			return fmt.Errorf("event name %q has %q at byte %d: use letters, digits, '_', '.', ':' and '-'", name, c, i)
		}
	}
	return nil
}
