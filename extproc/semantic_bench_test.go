package extproc

import (
	"fmt"
	"testing"

	"github.com/phochat/phogate/cache"
	"github.com/phochat/phogate/cache/semantic"
)

// BenchmarkSemanticLookupPath measures what the semantic cache adds to the request body
// phase after an exact miss, with the built-in embedder: the partition (masking and hashing
// the request), the embedding and the search of a partition of 10,000 entries.
func BenchmarkSemanticLookupPath(b *testing.B) {
	ix, err := semantic.New(b.Context(), semantic.Config{})
	if err != nil {
		b.Fatal(err)
	}
	defer ix.Close()
	body := []byte(chat("gpt-4o-mini", `"temperature":0.2,`, system("You are terse."),
		user("How do I reset my password on the website?")))
	masked, _, err := maskLastUserText(body)
	if err != nil {
		b.Fatal(err)
	}
	key, err := cache.BuildKey(masked, "gpt-4o-mini", "global", cache.KeyOptions{})
	if err != nil {
		b.Fatal(err)
	}
	for i := range 10_000 {
		q := fmt.Sprintf("question number %d about topic %d and subject %d", i, i%97, i%13)
		if _, err := ix.Add(b.Context(), key.ID, q, "x1:answer"); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	for b.Loop() {
		masked, text, _ := maskLastUserText(body)
		key, _ := cache.BuildKey(masked, "gpt-4o-mini", "global", cache.KeyOptions{})
		vec, _ := ix.Embed(b.Context(), text)
		ix.LookupVector(key.ID, text, vec, 0.99)
	}
}
