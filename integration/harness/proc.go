package harness

import (
	"fmt"
	"os"
	"strconv"
	"strings"
)

// StatusBytes reads a size field of /proc/<pid>/status, such as "VmRSS"
// (resident set now) or "VmHWM" (its peak), in bytes. A field that is
// missing reads as 0 (kernel threads have no memory fields).
func StatusBytes(pid int, field string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, fmt.Errorf("reading %s of process %d (Linux only): %w", field, pid, err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == field+":" {
			kb, err := strconv.ParseInt(f[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("process %d: %s: %w", pid, line, err)
			}
			return kb << 10, nil
		}
	}
	return 0, nil
}
