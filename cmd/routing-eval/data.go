package main

import (
	"bufio"
	"compress/gzip"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

// Paths under the data directory.
const (
	gsm8kFile   = "routing-dev/gsm8k.jsonl.gz"
	mtBenchFile = "routing-dev/mt-bench.jsonl.gz"
	pricesFile  = "prices.json"
)

// item is one labelled prompt: the text the router sees, the quality of each model's answer
// and the tokens each answer cost.
type item struct {
	id           string
	prompt       string
	contaminated bool
	// strongQ and weakQ are the answers' quality: 0 or 1 on GSM8K, a 1-10 score on MT-Bench.
	strongQ, weakQ float64
	// strongTok and weakTok are the input and output tokens each model was billed for.
	strongTok, weakTok tokens
}

type tokens struct{ in, out int }

// price is a model's price in USD per one million tokens.
type price struct {
	Input  float64 `json:"input"`
	Output float64 `json:"output"`
}

func (p price) cost(t tokens) float64 {
	return (float64(t.in)*p.Input + float64(t.out)*p.Output) / 1e6
}

type gsm8kRow struct {
	ID            string `json:"id"`
	Prompt        string `json:"prompt"`
	StrongOK      *bool  `json:"strong_ok"`
	WeakOK        *bool  `json:"weak_ok"`
	Contaminated  bool   `json:"contaminated"`
	RequestTokens int    `json:"request_tokens"`
	StrongTokens  int    `json:"strong_tokens"`
	WeakTokens    int    `json:"weak_tokens"`
}

type mtBenchRow struct {
	ID           string   `json:"id"`
	Prompt       string   `json:"prompt"`
	StrongScore  *float64 `json:"strong_score"`
	WeakScore    *float64 `json:"weak_score"`
	Contaminated bool     `json:"contaminated"`
	PromptTokens []int    `json:"prompt_tokens"`
	StrongTokens []int    `json:"strong_tokens"`
	WeakTokens   []int    `json:"weak_tokens"`
}

// checkDataDir fails with a clear message when dir does not hold the evaluation files.
func checkDataDir(dir string) error {
	for _, f := range []string{gsm8kFile, mtBenchFile, pricesFile} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			return fmt.Errorf("data directory %q has no %s (pass -data with the folder "+
				"holding routing-dev/ and prices.json): %w", dir, f, err)
		}
	}
	return nil
}

// readGSM8K reads GSM8K rows. A row is billed for the whole few-shot request the labels were
// made with, and its own answer.
func readGSM8K(path string) ([]item, error) {
	var out []item
	err := readJSONL(path, func(line int, b []byte) error {
		var r gsm8kRow
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		if r.ID == "" || r.StrongOK == nil || r.WeakOK == nil {
			return errors.New("needs id, strong_ok and weak_ok")
		}
		out = append(out, item{
			id: r.ID, prompt: r.Prompt, contaminated: r.Contaminated,
			strongQ: b01(*r.StrongOK), weakQ: b01(*r.WeakOK),
			strongTok: tokens{r.RequestTokens, r.StrongTokens},
			weakTok:   tokens{r.RequestTokens, r.WeakTokens},
		})
		return nil
	})
	return out, err
}

// readMTBench reads MT-Bench rows. The router sees the first turn; the conversation has two,
// and the second turn's input holds the first turn and its answer, so a row is billed for
// both turns.
func readMTBench(path string) ([]item, error) {
	var out []item
	err := readJSONL(path, func(line int, b []byte) error {
		var r mtBenchRow
		if err := json.Unmarshal(b, &r); err != nil {
			return err
		}
		if r.ID == "" || r.StrongScore == nil || r.WeakScore == nil {
			return errors.New("needs id, strong_score and weak_score")
		}
		st, err := twoTurns(r.PromptTokens, r.StrongTokens)
		if err != nil {
			return fmt.Errorf("strong tokens: %w", err)
		}
		wt, err := twoTurns(r.PromptTokens, r.WeakTokens)
		if err != nil {
			return fmt.Errorf("weak tokens: %w", err)
		}
		out = append(out, item{
			id: r.ID, prompt: r.Prompt, contaminated: r.Contaminated,
			strongQ: *r.StrongScore, weakQ: *r.WeakScore, strongTok: st, weakTok: wt,
		})
		return nil
	})
	return out, err
}

// twoTurns bills turn 1 (its prompt in, its answer out) and turn 2 (both prompts and the
// first answer in, its answer out).
func twoTurns(prompt, answer []int) (tokens, error) {
	if len(prompt) != 2 || len(answer) != 2 {
		return tokens{}, fmt.Errorf("want 2 turns, have %d prompts and %d answers",
			len(prompt), len(answer))
	}
	return tokens{
		in:  prompt[0] + (prompt[0] + answer[0] + prompt[1]),
		out: answer[0] + answer[1],
	}, nil
}

func b01(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// readJSONL calls fn with each non-empty line of a gzip-compressed JSON Lines file.
func readJSONL(path string, fn func(line int, b []byte) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	defer zr.Close()
	sc := bufio.NewScanner(zr)
	sc.Buffer(make([]byte, 0, 1<<20), 16<<20)
	n := 0
	for line := 1; sc.Scan(); line++ {
		if len(sc.Bytes()) == 0 {
			continue
		}
		if err := fn(line, sc.Bytes()); err != nil {
			return fmt.Errorf("%s:%d: %w", path, line, err)
		}
		n++
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if n == 0 {
		return fmt.Errorf("%s: no rows", path)
	}
	return nil
}

// readPrices reads the price table and returns the named models' prices.
func readPrices(path string, names ...string) (map[string]price, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var table struct {
		Models map[string]price `json:"models"`
	}
	if err := json.Unmarshal(b, &table); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := map[string]price{}
	for _, n := range names {
		p, ok := table.Models[n]
		if !ok {
			return nil, fmt.Errorf("%s: no price for model %q", path, n)
		}
		out[n] = p
	}
	return out, nil
}
