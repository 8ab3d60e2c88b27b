package cache

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
)

// maxSSELine bounds one buffered SSE line, so a stream without line breaks cannot grow memory
// without limit.
const maxSSELine = 16 << 20

// errAfterDone is returned for data after the [DONE] event.
var errAfterDone = errors.New("chunk after [DONE]")

// Reassembler rebuilds a complete answer from a streamed one: feed it each SSE event's data
// with [Reassembler.Add] (or the raw event stream with [Reassembler.Write]) and take the
// [Entry] from [Reassembler.Result].
//
// Every field is kept: content, refusal and other string fields of the deltas (such as
// "reasoning_content") are concatenated; tool calls are merged by index, with their argument
// fragments concatenated; logprobs arrays are appended; objects in deltas are merged field by
// field; other fields keep their last value. The last chunk's usage, id, created, model and
// system_fingerprint win.
//
// The zero value is ready to use. A Reassembler is not safe for concurrent use.
type Reassembler struct {
	done    bool
	chunks  int
	entry   Entry
	extra   map[string]json.RawMessage
	choices map[int]*choiceState

	// SSE framing for Write.
	pending []byte
	data    []byte
	hasData bool
}

type choiceState struct {
	role       string
	content    *strings.Builder
	refusal    *strings.Builder
	tools      map[int]*ToolCall
	deltaExtra map[string]any
	logprobs   any
	finish     string
	extra      map[string]json.RawMessage
}

// Add takes the data of one SSE event: a chat.completion.chunk object, or "[DONE]". A chunk
// that is not JSON, or that carries an "error", is an error; so is data after [DONE].
func (r *Reassembler) Add(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) == 0 {
		return nil
	}
	if r.done {
		return errAfterDone
	}
	if string(data) == "[DONE]" {
		r.done = true
		return nil
	}
	f, err := splitObject(data)
	if err != nil {
		return fmt.Errorf("parsing chunk: %w", err)
	}
	if raw, ok := f["error"]; ok {
		return fmt.Errorf("stream carried an error: %.200s", raw)
	}
	r.chunks++
	return r.addChunk(f)
}

func (r *Reassembler) addChunk(f map[string]json.RawMessage) error {
	delete(f, "object")
	var s string
	if takeString(f, "id", &s); s != "" {
		r.entry.ID = s
	}
	var n int64
	if takeInt(f, "created", &n); n != 0 {
		r.entry.Created = n
	}
	s = ""
	if takeString(f, "model", &s); s != "" {
		r.entry.Model = s
	}
	s = ""
	if takeString(f, "system_fingerprint", &s); s != "" {
		r.entry.SystemFingerprint = s
	}
	if raw, ok := take(f, "usage"); ok {
		u := new(Usage)
		if err := json.Unmarshal(raw, u); err != nil {
			return fmt.Errorf("parsing chunk usage: %w", err)
		}
		r.entry.Usage = u
	}
	if raw, ok := take(f, "choices"); ok {
		var choices []map[string]json.RawMessage
		if err := json.Unmarshal(raw, &choices); err != nil {
			return fmt.Errorf("parsing chunk choices: %w", err)
		}
		for _, c := range choices {
			if err := r.addChoice(c); err != nil {
				return err
			}
		}
	}
	if len(f) > 0 && r.extra == nil {
		r.extra = map[string]json.RawMessage{}
	}
	maps.Copy(r.extra, f)
	return nil
}

func (r *Reassembler) addChoice(raw map[string]json.RawMessage) error {
	f := map[string]json.RawMessage{}
	for k, v := range raw {
		if string(v) != "null" {
			f[k] = canonicalRaw(v)
		}
	}
	var idx int64
	takeInt(f, "index", &idx)
	cs := r.choice(int(idx))
	if fr := takeStringPtr(f, "finish_reason"); fr != nil {
		cs.finish = *fr
	}
	if lp, ok := take(f, "logprobs"); ok {
		cs.logprobs = mergeValue(cs.logprobs, decodeAny(lp))
	}
	if d, ok := take(f, "delta"); ok {
		if err := cs.addDelta(d); err != nil {
			return err
		}
	}
	if len(f) > 0 && cs.extra == nil {
		cs.extra = map[string]json.RawMessage{}
	}
	maps.Copy(cs.extra, f)
	return nil
}

func (r *Reassembler) choice(i int) *choiceState {
	if r.choices == nil {
		r.choices = map[int]*choiceState{}
	}
	cs := r.choices[i]
	if cs == nil {
		cs = &choiceState{}
		r.choices[i] = cs
	}
	return cs
}

func (cs *choiceState) addDelta(raw json.RawMessage) error {
	f, err := splitObject(raw)
	if err != nil {
		return fmt.Errorf("parsing chunk delta: %w", err)
	}
	takeString(f, "role", &cs.role)
	if s := takeStringPtr(f, "content"); s != nil {
		cs.content = appendText(cs.content, *s)
	}
	if s := takeStringPtr(f, "refusal"); s != nil {
		cs.refusal = appendText(cs.refusal, *s)
	}
	if tc, ok := take(f, "tool_calls"); ok {
		if err := cs.addToolCalls(tc); err != nil {
			return err
		}
	}
	for k, v := range f {
		if cs.deltaExtra == nil {
			cs.deltaExtra = map[string]any{}
		}
		cs.deltaExtra[k] = mergeValue(cs.deltaExtra[k], decodeAny(v))
	}
	return nil
}

func appendText(b *strings.Builder, s string) *strings.Builder {
	if b == nil {
		b = new(strings.Builder)
	}
	b.WriteString(s)
	return b
}

// addToolCalls merges tool call fragments by index. The id and type come once; the name
// usually comes once, but a provider that repeats it whole is not doubled; the argument
// fragments are concatenated.
func (cs *choiceState) addToolCalls(raw json.RawMessage) error {
	var calls []map[string]json.RawMessage
	if err := json.Unmarshal(raw, &calls); err != nil {
		return fmt.Errorf("parsing chunk tool_calls: %w", err)
	}
	for pos, f := range calls {
		idx := int64(pos)
		takeInt(f, "index", &idx)
		if cs.tools == nil {
			cs.tools = map[int]*ToolCall{}
		}
		tc := cs.tools[int(idx)]
		if tc == nil {
			tc = &ToolCall{}
			cs.tools[int(idx)] = tc
		}
		var id, typ string
		if takeString(f, "id", &id); id != "" && tc.ID == "" {
			tc.ID = id
		}
		if takeString(f, "type", &typ); typ != "" {
			tc.Type = typ
		}
		if fn, ok := take(f, "function"); ok && string(fn) != "null" {
			var part FunctionCall
			ff, err := splitObject(fn)
			if err != nil {
				return fmt.Errorf("parsing chunk tool call function: %w", err)
			}
			takeString(ff, "name", &part.Name)
			takeString(ff, "arguments", &part.Arguments)
			if part.Name != "" && part.Name != tc.Function.Name {
				tc.Function.Name += part.Name
			}
			tc.Function.Arguments += part.Arguments
		}
		for k, v := range f {
			if string(v) == "null" {
				continue
			}
			if tc.Extra == nil {
				tc.Extra = map[string]json.RawMessage{}
			}
			tc.Extra[k] = canonicalRaw(v)
		}
	}
	return nil
}

// decodeAny parses JSON keeping numbers as written.
func decodeAny(b []byte) any {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	var v any
	if dec.Decode(&v) != nil {
		return nil
	}
	return v
}

// mergeValue merges a delta fragment into the value so far: strings are concatenated, arrays
// appended, objects merged field by field; anything else replaces the old value.
func mergeValue(old, next any) any {
	switch n := next.(type) {
	case nil:
		return old
	case string:
		if o, ok := old.(string); ok {
			return o + n
		}
	case []any:
		if o, ok := old.([]any); ok {
			return append(o, n...)
		}
	case map[string]any:
		if o, ok := old.(map[string]any); ok {
			for k, v := range n {
				o[k] = mergeValue(o[k], v)
			}
			return o
		}
	}
	return next
}

// Done reports whether the [DONE] event has been seen.
func (r *Reassembler) Done() bool { return r.done }

// Result returns the answer reassembled so far. It is an error when no chunk carried a
// choice. The result is complete only when [Reassembler.Done] is true; [Storable] checks that.
func (r *Reassembler) Result() (*Entry, error) {
	if len(r.choices) == 0 {
		return nil, errors.New("reassembling stream: no choices received")
	}
	e := r.entry
	e.Extra = maps.Clone(r.extra)
	for _, i := range slices.Sorted(maps.Keys(r.choices)) {
		e.Choices = append(e.Choices, r.choices[i].result(i))
	}
	return &e, nil
}

func (cs *choiceState) result(index int) Choice {
	c := Choice{Index: index, FinishReason: cs.finish, Extra: maps.Clone(cs.extra)}
	if cs.logprobs != nil {
		c.Logprobs = mustRaw(cs.logprobs)
	}
	m := &c.Message
	m.Role = cs.role
	if m.Role == "" {
		m.Role = "assistant"
	}
	if cs.content != nil {
		s := cs.content.String()
		m.Content = &s
	}
	if cs.refusal != nil {
		s := cs.refusal.String()
		m.Refusal = &s
	}
	for _, i := range slices.Sorted(maps.Keys(cs.tools)) {
		tc := *cs.tools[i]
		tc.Extra = maps.Clone(tc.Extra)
		m.ToolCalls = append(m.ToolCalls, tc)
	}
	for k, v := range cs.deltaExtra {
		if m.Extra == nil {
			m.Extra = map[string]json.RawMessage{}
		}
		m.Extra[k] = mustRaw(v)
	}
	return c
}

// Write takes raw bytes of an SSE stream, split anywhere, and calls [Reassembler.Add] with the
// data of each complete event. Lines end with "\n" or "\r\n"; several "data:" lines of one
// event are joined with "\n"; comments and other fields are ignored. The first error from Add
// is returned, and later writes keep returning errors.
func (r *Reassembler) Write(p []byte) (int, error) {
	r.pending = append(r.pending, p...)
	for {
		i := bytes.IndexByte(r.pending, '\n')
		if i < 0 {
			break
		}
		line := bytes.TrimSuffix(r.pending[:i], []byte("\r"))
		r.pending = r.pending[i+1:]
		if err := r.line(line); err != nil {
			return len(p), err
		}
	}
	if len(r.pending) > maxSSELine {
		return len(p), fmt.Errorf("SSE line longer than %d bytes", maxSSELine)
	}
	// Keep the buffer from growing: move the unfinished line to the front.
	r.pending = append(r.pending[:0:0], r.pending...)
	return len(p), nil
}

func (r *Reassembler) line(l []byte) error {
	if len(l) == 0 {
		if !r.hasData {
			return nil
		}
		data := r.data
		r.data, r.hasData = nil, false
		return r.Add(data)
	}
	v, ok := bytes.CutPrefix(l, []byte("data:"))
	if !ok {
		return nil // comment (":"), event:, id:, retry:
	}
	v = bytes.TrimPrefix(v, []byte(" "))
	if r.hasData {
		r.data = append(r.data, '\n')
	}
	r.data = append(r.data, v...)
	r.hasData = true
	return nil
}
