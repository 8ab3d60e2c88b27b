package cache

import (
	"testing"
)

func FuzzBuildKey(f *testing.F) {
	f.Add([]byte(baseRequest))
	f.Add([]byte(`{"messages":[{"role":"user","content":[{"type":"text","text":"hòa"}]}],"n":2}`))
	f.Fuzz(func(t *testing.T, req []byte) {
		k, err := BuildKey(req, "m", "global", KeyOptions{CaseFold: true})
		if err == nil && k.Cacheable() == (k.Reason != "") {
			t.Errorf("BuildKey = %+v: cacheable and reason disagree", k)
		}
	})
}

func FuzzReassembler(f *testing.F) {
	e, _ := EntryFromJSON([]byte(completionJSON))
	sse, _ := e.SSE(true)
	f.Add(sse)
	f.Add([]byte("data: {\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":3}]}}]}\n\n"))
	f.Fuzz(func(t *testing.T, stream []byte) {
		var r Reassembler
		if _, err := r.Write(stream); err != nil {
			return
		}
		got, err := r.Result()
		if err != nil {
			return
		}
		if _, err := got.SSE(true); err != nil {
			t.Errorf("SSE of a reassembled entry = %v", err)
		}
		if _, err := got.JSON(); err != nil {
			t.Errorf("JSON of a reassembled entry = %v", err)
		}
	})
}
