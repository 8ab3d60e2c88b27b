// Command phogate-load sends OpenAI chat completions to a gateway at a fixed rate and prints
// the latency distribution, throughput and status codes. Point it at Envoy in front of
// phogate (or at `make run`) to see what the whole path adds to an answer.
//
//	phogate-load -url http://127.0.0.1:8080/v1 -key sk-phogate-demo -rate 100 -duration 20s
//
// -repeat sets the share of requests that ask a question already asked in this run, so
// the exact cache answers them; -stream asks for server-sent events. Latency is the time to
// the whole answer.
package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"sort"
	"strings"
	"sync/atomic"
	"time"

	vegeta "github.com/tsenart/vegeta/v12/lib"
)

type options struct {
	url, key, model string
	rate            int
	duration        time.Duration
	repeat          float64
	stream          bool
	workers         uint64
	timeout         time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.url, "url", "http://127.0.0.1:8080/v1", "OpenAI base `URL` of the gateway")
	flag.StringVar(&o.key, "key", os.Getenv("PHOGATE_LOAD_KEY"), "API `key` (default $PHOGATE_LOAD_KEY)")
	flag.StringVar(&o.model, "model", "gpt-4o-mini", "`model` to ask for")
	flag.IntVar(&o.rate, "rate", 50, "requests per second")
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "how long to send")
	flag.Float64Var(&o.repeat, "repeat", 0, "share (0..1) of requests repeating an earlier question")
	flag.BoolVar(&o.stream, "stream", false, "ask for server-sent events")
	flag.Uint64Var(&o.workers, "workers", 64, "initial number of concurrent senders")
	flag.DurationVar(&o.timeout, "timeout", 30*time.Second, "timeout of one request")
	flag.Parse()
	if err := run(o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "phogate-load:", err)
		os.Exit(1)
	}
}

func run(o options, w io.Writer) error {
	if o.rate <= 0 || o.duration <= 0 || o.repeat < 0 || o.repeat > 1 {
		return errors.New("-rate and -duration must be positive and -repeat within 0..1")
	}
	targeter := chatTargeter(o)
	attacker := vegeta.NewAttacker(vegeta.Workers(o.workers), vegeta.Timeout(o.timeout),
		vegeta.KeepAlive(true))
	var m vegeta.Metrics
	errs := map[string]int{}
	hits := 0
	for res := range attacker.Attack(targeter, vegeta.Rate{Freq: o.rate, Per: time.Second}, o.duration, "load") {
		m.Add(res)
		if res.Error != "" && res.Code == 0 {
			errs["error: "+res.Error]++
		}
		if res.Headers.Get("X-Phogate-Cache") == "hit" {
			hits++
		}
	}
	m.Close()
	report(w, o, &m, errs)
	fmt.Fprintf(w, "cache hits %d\n", hits)
	return nil
}

// chatTargeter returns requests whose question is new, or with probability repeat one of the
// questions asked so far.
func chatTargeter(o options) vegeta.Targeter {
	var n atomic.Int64
	// Questions of one run never match those of an earlier run.
	run := rand.Uint32()
	header := http.Header{"Content-Type": {"application/json"}}
	if o.key != "" {
		header.Set("Authorization", "Bearer "+o.key)
	}
	url := strings.TrimSuffix(o.url, "/") + "/chat/completions"
	return func(t *vegeta.Target) error {
		var i int64
		if asked := n.Load(); o.repeat > 0 && asked > 0 && rand.Float64() < o.repeat {
			i = 1 + rand.Int64N(asked)
		} else {
			i = n.Add(1)
		}
		question := fmt.Sprintf("Run %08x, question %d: how do I cook pho?", run, i)
		body, err := json.Marshal(map[string]any{
			"model":    o.model,
			"stream":   o.stream,
			"messages": []map[string]string{{"role": "user", "content": question}},
		})
		if err != nil {
			return err
		}
		t.Method, t.URL, t.Body, t.Header = http.MethodPost, url, body, header
		return nil
	}
}

func report(w io.Writer, o options, m *vegeta.Metrics, errs map[string]int) {
	fmt.Fprintf(w, "requests %d at %.1f/s for %s (repeat %.2f, stream %v), throughput %.1f/s\n",
		m.Requests, m.Rate, o.duration, o.repeat, o.stream, m.Throughput)
	fmt.Fprintf(w, "latency p50 %s  p90 %s  p99 %s  max %s\n", round(m.Latencies.P50),
		round(m.Latencies.P90), round(m.Latencies.P99), round(m.Latencies.Max))
	fmt.Fprintf(w, "success %.2f%%\n", 100*m.Success)
	var codes []string
	for c := range m.StatusCodes {
		codes = append(codes, c)
	}
	sort.Strings(codes)
	for _, c := range codes {
		fmt.Fprintf(w, "  status %s: %d\n", c, m.StatusCodes[c])
	}
	for e, n := range errs {
		fmt.Fprintf(w, "  %s: %d\n", e, n)
	}
}

func round(d time.Duration) time.Duration {
	if d < time.Millisecond {
		return d.Round(time.Microsecond)
	}
	return d.Round(10 * time.Microsecond)
}
