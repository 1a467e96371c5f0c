package rowcast

import "time"

// AppendUTC appends t in UTC as RFC 3339 with a Z, in one of the two
// forms rowcast writes: milliseconds always written (frac 3, the events'
// "timestamp", t.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")),
// or microseconds with trailing zeros dropped and no dot for a whole
// second (frac 6, row values, "2006-01-02T15:04:05.999999Z07:00"). It
// gives what AppendFormat gives without walking a layout: every change
// carries a few timestamps. FuzzAppendUTC holds the two to one result.
func AppendUTC(b []byte, t time.Time, frac int) []byte {
	t = t.UTC()
	year, month, day := t.Date()
	if year < 0 || year > 9999 || (frac != 3 && frac != 6) {
		layout := "2006-01-02T15:04:05.000Z07:00"
		if frac == 6 {
			layout = "2006-01-02T15:04:05.999999Z07:00"
		}
		return t.AppendFormat(b, layout)
	}
	hour, minute, sec := t.Clock()
	b = append(b, byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-')
	b = append2(b, int(month), '-')
	b = append2(b, day, 'T')
	b = append2(b, hour, ':')
	b = append2(b, minute, ':')
	b = append(b, byte('0'+sec/10), byte('0'+sec%10))
	ns := t.Nanosecond()
	if frac == 3 {
		ms := ns / 1e6
		b = append(b, '.', byte('0'+ms/100), byte('0'+ms/10%10), byte('0'+ms%10))
	} else if us := ns / 1e3; us != 0 {
		var d [6]byte
		for i := 5; i >= 0; i-- {
			d[i] = byte('0' + us%10)
			us /= 10
		}
		n := 6
		for d[n-1] == '0' {
			n--
		}
		b = append(append(b, '.'), d[:n]...)
	}
	return append(b, 'Z')
}

// append2 appends a two-digit number and a separator.
func append2(b []byte, n int, sep byte) []byte {
	return append(b, byte('0'+n/10), byte('0'+n%10), sep)
}
