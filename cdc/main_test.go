package cdc

import (
	"testing"

	"rowcast/integration/pgcluster"
)

func TestMain(m *testing.M) { pgcluster.Main(m) }
