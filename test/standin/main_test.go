package standin

import (
	"testing"

	"go.uber.org/goleak"
)

// TestMain fails the package when a test leaves goroutines behind: a stand-in that leaks
// streams or health checkers would slow every end-to-end run.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
