package cache

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/text/unicode/norm"
)

const baseRequest = `{"model":"alias","messages":[{"role":"system","content":"Be brief."},` +
	`{"role":"user","content":"Hello there"}]}`

func mustKey(t *testing.T, req, model, scope string, opts KeyOptions) Key {
	t.Helper()
	k, err := BuildKey([]byte(req), model, scope, opts)
	if err != nil {
		t.Fatalf("BuildKey(%s) = %v", req, err)
	}
	return k
}

// withField returns baseRequest with one more top-level field.
func withField(field string) string {
	return strings.TrimSuffix(baseRequest, "}") + "," + field + "}"
}

func TestBuildKeyShapingFieldsChangeKey(t *testing.T) {
	opts := KeyOptions{CaseFold: true}
	base := mustKey(t, baseRequest, "m", "global", opts)
	fields := []string{
		`"temperature":0.2`, `"top_p":0.9`, `"max_tokens":10`, `"max_completion_tokens":10`,
		`"seed":7`, `"n":1`, `"stop":["x"]`, `"presence_penalty":0.5`,
		`"frequency_penalty":0.5`, `"logit_bias":{"42":-100}`, `"logprobs":true`,
		`"top_logprobs":2`, `"reasoning_effort":"low"`, `"response_format":{"type":"json_object"}`,
		`"tools":[{"type":"function","function":{"name":"f"}}]`, `"tool_choice":"required"`,
		`"parallel_tool_calls":false`, `"some_future_param":1`,
	}
	seen := map[string]string{base.ID: "base"}
	for _, f := range fields {
		k := mustKey(t, withField(f), "m", "global", opts)
		if prev, dup := seen[k.ID]; dup {
			t.Errorf("key with %s equals key of %s", f, prev)
		}
		seen[k.ID] = f
	}
}

func TestBuildKeyIgnoredFieldsKeepKey(t *testing.T) {
	opts := KeyOptions{CaseFold: true}
	base := mustKey(t, baseRequest, "m", "global", opts)
	for _, f := range []string{
		`"stream":true`, `"stream_options":{"include_usage":true}`, `"user":"u1"`,
		`"metadata":{"a":"b"}`, `"store":true`, `"safety_identifier":"s"`,
		`"prompt_cache_key":"p"`, `"service_tier":"flex"`,
	} {
		if k := mustKey(t, withField(f), "m", "global", opts); k != base {
			t.Errorf("key with %s = %v, want %v", f, k, base)
		}
	}
	// The served model counts, the requested name does not.
	alias := strings.Replace(baseRequest, `"alias"`, `"other-alias"`, 1)
	if k := mustKey(t, alias, "m", "global", opts); k != base {
		t.Errorf("key with another requested model = %v, want %v", k, base)
	}
	if k := mustKey(t, baseRequest, "m2", "global", opts); k == base {
		t.Errorf("key of another served model equals %v", base)
	}
}

func TestBuildKeyConversation(t *testing.T) {
	opts := KeyOptions{CaseFold: true}
	msgs := func(s string) string { return `{"model":"m","messages":[` + s + `]}` }
	tests := []struct {
		name string
		a, b string
		same bool
	}{
		{"order", `{"role":"user","content":"a"},{"role":"user","content":"b"}`,
			`{"role":"user","content":"b"},{"role":"user","content":"a"}`, false},
		{"role", `{"role":"user","content":"a"}`, `{"role":"assistant","content":"a"}`, false},
		{"system prompt", `{"role":"system","content":"x"},{"role":"user","content":"a"}`,
			`{"role":"system","content":"y"},{"role":"user","content":"a"}`, false},
		{"tool call", `{"role":"assistant","tool_calls":[{"id":"1","type":"function",` +
			`"function":{"name":"f","arguments":"{}"}}]}`,
			`{"role":"assistant","tool_calls":[{"id":"1","type":"function",` +
				`"function":{"name":"g","arguments":"{}"}}]}`, false},
		{"tool result", `{"role":"tool","tool_call_id":"1","content":"17"}`,
			`{"role":"tool","tool_call_id":"1","content":"18"}`, false},
		{"image verbatim", `{"role":"user","content":[{"type":"image_url","image_url":` +
			`{"url":"data:A"}}]}`, `{"role":"user","content":[{"type":"image_url",` +
			`"image_url":{"url":"data:a"}}]}`, false},
		{"key order", `{"role":"user","content":"a"}`, `{"content":"a","role":"user"}`, true},
		{"number spelling", `{"role":"user","content":"a","x":1.0}`,
			`{"role":"user","content":"a","x":1}`, true},
		{"text part", `{"role":"user","content":[{"type":"text","text":"Hi  there"}]}`,
			`{"role":"user","content":[{"type":"text","text":"hi there"}]}`, true},
		{"vietnamese", `{"role":"user","content":"hoà bình"}`,
			`{"role":"user","content":"hòa bình"}`, true},
		{"vietnamese case", `{"role":"user","content":"Thuý"}`,
			`{"role":"user","content":"thúy"}`, true},
		{"nfd", `{"role":"user","content":"` + norm.NFD.String("Tiếng Việt") + `"}`,
			`{"role":"user","content":"Tiếng Việt"}`, true},
		{"whitespace", `{"role":"user","content":"  a \t b  "}`,
			`{"role":"user","content":"a b"}`, true},
		{"newline kept apart", `{"role":"user","content":"a\nb"}`,
			`{"role":"user","content":"a b"}`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := mustKey(t, msgs(tt.a), "m", "global", opts)
			b := mustKey(t, msgs(tt.b), "m", "global", opts)
			if (a == b) != tt.same {
				t.Errorf("keys equal = %v, want %v (%v, %v)", a == b, tt.same, a, b)
			}
		})
	}
}

func TestBuildKeyCaseFoldSetting(t *testing.T) {
	a := `{"model":"m","messages":[{"role":"user","content":"Hello"}]}`
	b := `{"model":"m","messages":[{"role":"user","content":"hello"}]}`
	if mustKey(t, a, "m", "global", KeyOptions{}) == mustKey(t, b, "m", "global", KeyOptions{}) {
		t.Errorf("keys without case folding are equal")
	}
	fold := KeyOptions{CaseFold: true}
	if mustKey(t, a, "m", "global", fold) != mustKey(t, b, "m", "global", fold) {
		t.Errorf("keys with case folding differ")
	}
}

func TestBuildKeyScope(t *testing.T) {
	g := mustKey(t, baseRequest, "m", "global", KeyOptions{})
	u1 := mustKey(t, baseRequest, "m", "user:1", KeyOptions{})
	u2 := mustKey(t, baseRequest, "m", "user:2", KeyOptions{})
	if g == u1 || u1 == u2 {
		t.Errorf("scoped keys collide: %v %v %v", g, u1, u2)
	}
	// Model and scope are length-prefixed, so shifting a byte between them changes the key.
	if mustKey(t, baseRequest, "ab", "c", KeyOptions{}) == mustKey(t, baseRequest, "a", "bc",
		KeyOptions{}) {
		t.Errorf("(ab, c) and (a, bc) give one key")
	}
	if !strings.HasPrefix(g.ID, "x1:") || len(g.ID) != 3+64 {
		t.Errorf("key ID = %q, want x1: and 64 hex digits", g.ID)
	}
}

func TestBuildKeyUncacheable(t *testing.T) {
	opts := KeyOptions{Uncacheable: []string{"tools", "temperature"}}
	tests := []struct {
		field  string
		reason string
	}{
		{`"n":2`, "n > 1 asks for several answers"},
		{`"n":"2"`, "n is not a number"},
		{`"tools":[]`, `parameter "tools" is uncacheable`},
		{`"temperature":1`, `parameter "temperature" is uncacheable`},
		{`"n":1`, ""},
		{`"tools":null`, ""},
	}
	for _, tt := range tests {
		k := mustKey(t, withField(tt.field), "m", "global", opts)
		if k.Reason != tt.reason || k.Cacheable() != (tt.reason == "") {
			t.Errorf("BuildKey(%s) = %+v, want reason %q", tt.field, k, tt.reason)
		}
	}
}

func TestBuildKeyBadInput(t *testing.T) {
	for _, req := range []string{``, `[]`, `"x"`, `{"a":`, `{} {}`, `null`} {
		if _, err := BuildKey([]byte(req), "m", "global", KeyOptions{}); err == nil {
			t.Errorf("BuildKey(%q) = nil error, want one", req)
		}
	}
	if _, err := BuildKey([]byte(`{}`), "", "global", KeyOptions{}); err == nil {
		t.Errorf("BuildKey with empty model = nil error, want one")
	}
}

func TestNormalizeText(t *testing.T) {
	tests := []struct {
		in, want string
		fold     bool
	}{
		{"hòa", "hoà", false},
		{"Hòa", "Hoà", false},
		{"khỏe", "khoẻ", false},
		{"thúy", "thuý", false},
		{"THÚY", "THUÝ", false},
		{"tùy", "tuỳ", false},
		{"quỳ", "quỳ", false}, // qu + y: the mark is on the only vowel
		{"quý", "quý", false},
		{"hoàng", "hoàng", false}, // final consonant: same in both conventions
		{"toán", "toán", false},
		{"ngoài", "ngoài", false}, // three vowels
		{"hóa học", "hoá học", false},
		{norm.NFD.String("hòa"), "hoà", false},
		{"Thuý", "thuý", true},
		{"  Xin   chào\t\n thế giới  ", "xin chào\nthế giới", true},
		{"tiếng Việt", "tiếng việt", true},
	}
	for _, tt := range tests {
		if got := NormalizeText(tt.in, tt.fold); got != tt.want {
			t.Errorf("NormalizeText(%q, %v) = %q, want %q", tt.in, tt.fold, got, tt.want)
		}
	}
	if diff := cmp.Diff(NormalizeText("hoà", true), NormalizeText("hòa", true)); diff != "" {
		t.Errorf("hoà and hòa differ:\n%s", diff)
	}
}

func BenchmarkBuildKey(b *testing.B) {
	req := []byte(`{"model":"gpt-4o-mini","temperature":0.2,"max_tokens":256,"stream":true,` +
		`"messages":[{"role":"system","content":"Bạn là trợ lý hữu ích. Trả lời ngắn gọn."},` +
		`{"role":"user","content":"Thời tiết ở Hà Nội hôm nay thế nào? Hãy trả lời bằng ` +
		`tiếng Việt và tiếng Anh."},{"role":"assistant","content":"Hôm nay trời nắng."},` +
		`{"role":"user","content":"Còn ngày mai thì sao?"}]}`)
	opts := KeyOptions{CaseFold: true}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := BuildKey(req, "gpt-4o-mini", "global", opts); err != nil {
			b.Fatal(err)
		}
	}
}
