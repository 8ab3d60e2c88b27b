//go:build !amd64

package semantic

// dotInt8 returns the dot product of two code vectors of equal length.
func dotInt8(a, b []int8) int32 { return dotInt8Go(a, b) }

// prefetch does nothing on this architecture.
func (g *graph) prefetch(ids []int32) {}
