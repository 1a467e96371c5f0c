package pgcluster_test

import (
	"testing"

	"rowcast/integration/pgcluster/pgtest"
)

// TestMain is in the external test package because pgtest imports
// pgcluster, so the package's own test files cannot import pgtest.
func TestMain(m *testing.M) { pgtest.Main(m) }
