package cdc

import (
	"testing"

	"rowcast/integration/pgcluster/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }
