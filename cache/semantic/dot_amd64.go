package semantic

import "golang.org/x/sys/cpu"

// useAVX2 selects the assembly dot product; the CPU must have AVX2 and the OS must save its
// registers, which x/sys/cpu checks.
var useAVX2 = cpu.X86.HasAVX2

//go:noescape
func dotInt8AVX2(a, b *int8, n int) int32

// dotInt8 returns the dot product of two code vectors of equal length, a multiple of
// codeAlign.
func dotInt8(a, b []int8) int32 {
	if useAVX2 && len(a) > 0 {
		return dotInt8AVX2(&a[0], &b[:len(a)][0], len(a))
	}
	return dotInt8Go(a, b)
}

//go:noescape
func prefetchCodes(codes *int8, size int, ids *int32, n int)

// prefetch starts loading the codes of the nodes ids into the CPU caches, so that the
// memory reads of a node's neighbours overlap instead of following one another.
func (g *graph) prefetch(ids []int32) {
	if len(ids) > 0 {
		prefetchCodes(&g.codes[0], g.cdim, &ids[0], len(ids))
	}
}
