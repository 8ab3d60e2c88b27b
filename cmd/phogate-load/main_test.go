package main

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

// questions draws n targets and returns their questions in order.
func questions(t *testing.T, o options, n int) []string {
	t.Helper()
	tr := chatTargeter(o)
	var out []string
	for range n {
		var tg vegeta.Target
		if err := tr(&tg); err != nil {
			t.Fatal(err)
		}
		if tg.Method != http.MethodPost || !strings.HasSuffix(tg.URL, "/v1/chat/completions") ||
			tg.Header.Get("Authorization") != "Bearer k" {
			t.Fatalf("target %s %s %v", tg.Method, tg.URL, tg.Header)
		}
		var body struct {
			Messages []struct{ Content string } `json:"messages"`
		}
		if err := json.Unmarshal(tg.Body, &body); err != nil {
			t.Fatal(err)
		}
		out = append(out, body.Messages[0].Content)
	}
	return out
}

func TestTargeterRepeat(t *testing.T) {
	o := options{url: "http://gw/v1/", key: "k", model: "m"}
	seen := map[string]bool{}
	for _, q := range questions(t, o, 200) {
		if seen[q] {
			t.Fatalf("question %q asked twice with repeat 0", q)
		}
		seen[q] = true
	}
	o.repeat = 1
	qs := questions(t, o, 200)
	asked := map[string]bool{qs[0]: true}
	for _, q := range qs[1:] {
		if !asked[q] {
			t.Fatalf("question %q is new with repeat 1", q)
		}
	}
	if a, b := questions(t, o, 1)[0], qs[0]; a == b {
		t.Errorf("two runs asked the same first question %q", a)
	}
}

func TestRunReportsEveryRequest(t *testing.T) {
	var mu sync.Mutex
	calls := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		calls++
		n := calls
		mu.Unlock()
		if n%4 == 0 {
			w.WriteHeader(429)
			return
		}
		if n%4 == 1 {
			w.Header().Set("X-Phogate-Cache", "hit")
		}
		w.Write([]byte(`{}`))
	}))
	defer srv.Close()
	var out strings.Builder
	err := run(options{url: srv.URL + "/v1", model: "m", rate: 40, duration: 500 * time.Millisecond,
		workers: 4, timeout: time.Second}, &out)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "requests 20 ") || !strings.Contains(out.String(), "status 429: 5") ||
		!strings.Contains(out.String(), "status 200: 15") || !strings.Contains(out.String(), "cache hits 5") {
		t.Errorf("report:\n%s\nwant 20 requests, 15 with 200 (5 cache hits) and 5 with 429", out.String())
	}
	if err := run(options{rate: 0, duration: time.Second}, &out); err == nil {
		t.Error("run with rate 0 = nil error")
	}
}
