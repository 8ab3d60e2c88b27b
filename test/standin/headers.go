package standin

import (
	"net/http"
	"strings"
)

// header is one entry of a [headerMap]. Keys are lower-case, as in Envoy's header maps.
type header struct {
	key, value string
}

// headerMap is an ordered multi-map of lower-case header names, pseudo-headers included
// (:method, :path, :authority, :scheme on requests; :status on responses).
type headerMap []header

func (h headerMap) get(key string) (string, bool) {
	for _, e := range h {
		if e.key == key {
			return e.value, true
		}
	}
	return "", false
}

func (h headerMap) value(key string) string {
	v, _ := h.get(key)
	return v
}

func (h *headerMap) del(key string) {
	out := (*h)[:0]
	for _, e := range *h {
		if e.key != key {
			out = append(out, e)
		}
	}
	*h = out
}

func (h *headerMap) set(key, value string) {
	h.del(key)
	*h = append(*h, header{key, value})
}

func (h *headerMap) add(key, value string) {
	*h = append(*h, header{key, value})
}

func (h headerMap) clone() headerMap {
	return append(headerMap(nil), h...)
}

// requestHeaders builds the Envoy view of a downstream HTTP/1.1 request: the Host header
// becomes :authority (§1.2).
func requestHeaders(r *http.Request) headerMap {
	h := headerMap{
		{":authority", r.Host},
		{":path", r.RequestURI},
		{":method", r.Method},
		{":scheme", "http"},
	}
	appendHTTPHeader(&h, r.Header)
	return h
}

func appendHTTPHeader(h *headerMap, src http.Header) {
	for k, vs := range src {
		lk := strings.ToLower(k)
		if hopByHop[lk] {
			continue
		}
		for _, v := range vs {
			h.add(lk, v)
		}
	}
}

// hopByHop lists connection-level headers that never cross the proxy.
var hopByHop = map[string]bool{
	"connection": true, "keep-alive": true, "proxy-connection": true,
	"transfer-encoding": true, "upgrade": true, "te": true, "trailer": true,
}

// toHTTPHeader converts the map to net/http form, leaving out pseudo-headers.
func (h headerMap) toHTTPHeader() http.Header {
	out := make(http.Header, len(h))
	for _, e := range h {
		if strings.HasPrefix(e.key, ":") || hopByHop[e.key] {
			continue
		}
		out[http.CanonicalHeaderKey(e.key)] = append(out[http.CanonicalHeaderKey(e.key)], e.value)
	}
	return out
}

// validHeaderValue rejects control characters that HTTP/1.1 forbids in values.
func validHeaderValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if c := v[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}

// validHeaderName accepts lower-case HTTP tokens, optionally with a leading ':'.
func validHeaderName(k string) bool {
	name := strings.TrimPrefix(k, ":")
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c >= 'A' && c <= 'Z' || c <= ' ' || c >= 0x7f || strings.IndexByte("()<>@,;:\\\"/[]?={}", c) >= 0 {
			return false
		}
	}
	return true
}
