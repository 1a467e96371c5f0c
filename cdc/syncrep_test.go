package cdc

import "testing"

func TestNamesStandby(t *testing.T) {
	for setting, want := range map[string]bool{
		``:                           false,
		`*`:                          true,
		`rowcast`:                    true,
		`RowCast`:                    true,
		`replica1, rowcast`:          true,
		`replica1,replica2`:          false,
		`FIRST 1 (replica1, *)`:      true,
		`2 (replica1, "rowcast")`:    true,
		`ANY 1 (replica1, replica2)`: false,
		`ANY 2 ("a,rowcast", b)`:     false,
		`first 1 ("ROWCAST")`:        true,
	} {
		if got := namesStandby(setting, "rowcast"); got != want {
			t.Errorf("namesStandby(%q) = %v, want %v", setting, got, want)
		}
	}
}
