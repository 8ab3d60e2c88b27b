package xds

import (
	"testing"
	"time"

	"go.uber.org/goleak"
)

// defaultTestTimeout bounds every test context.
const defaultTestTimeout = 30 * time.Second

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
