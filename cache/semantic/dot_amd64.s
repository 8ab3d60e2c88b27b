#include "textflag.h"

// func dotInt8AVX2(a, b *int8, n int) int32
//
// n is a positive multiple of 32. Each step widens 16 bytes of each vector to 16-bit lanes
// (VPMOVSXBW) and multiplies and pairwise adds them into 32-bit lanes (VPMADDWD), so no
// product or sum overflows.
TEXT ·dotInt8AVX2(SB), NOSPLIT, $0-28
	MOVQ a+0(FP), SI
	MOVQ b+8(FP), DI
	MOVQ n+16(FP), CX
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1

loop:
	VPMOVSXBW (SI), Y2
	VPMOVSXBW (DI), Y3
	VPMADDWD  Y2, Y3, Y2
	VPADDD    Y2, Y0, Y0
	VPMOVSXBW 16(SI), Y4
	VPMOVSXBW 16(DI), Y5
	VPMADDWD  Y4, Y5, Y4
	VPADDD    Y4, Y1, Y1
	ADDQ      $32, SI
	ADDQ      $32, DI
	SUBQ      $32, CX
	JNZ       loop

	VPADDD       Y0, Y1, Y0
	VEXTRACTI128 $1, Y0, X1
	VPADDD       X0, X1, X0
	VPSHUFD      $0x4E, X0, X1
	VPADDD       X0, X1, X0
	VPSHUFD      $0xB1, X0, X1
	VPADDD       X0, X1, X0
	VMOVD        X0, AX
	MOVL         AX, ret+24(FP)
	VZEROUPPER
	RET

// func prefetchCodes(codes *int8, size int, ids *int32, n int)
//
// Asks the CPU to start loading the codes of n nodes, size bytes each, into its caches.
TEXT ·prefetchCodes(SB), NOSPLIT, $0-32
	MOVQ codes+0(FP), SI
	MOVQ size+8(FP), DX
	MOVQ ids+16(FP), DI
	MOVQ n+24(FP), CX
	TESTQ CX, CX
	JZ   done

node:
	MOVLQSX (DI), AX
	IMULQ   DX, AX
	ADDQ    SI, AX
	MOVQ    DX, BX

line:
	PREFETCHT0 (AX)
	ADDQ       $64, AX
	SUBQ       $64, BX
	JG         line
	ADDQ       $4, DI
	DECQ       CX
	JNZ        node

done:
	RET
