package standin

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"

	v3mutationrulespb "github.com/envoyproxy/go-control-plane/envoy/config/common/mutation_rules/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
)

// mutationRules is a compiled HeaderMutationRules with the defaults of §2.4.
type mutationRules struct {
	allowAllRouting bool
	allowEnvoy      bool
	disallowSystem  bool
	disallowAll     bool
	disallowIsError bool
	allowExpr       *regexp.Regexp
	disallowExpr    *regexp.Regexp
}

func compileMutationRules(r *v3mutationrulespb.HeaderMutationRules) (*mutationRules, error) {
	m := &mutationRules{
		allowAllRouting: r.GetAllowAllRouting().GetValue(),
		allowEnvoy:      r.GetAllowEnvoy().GetValue(),
		disallowSystem:  r.GetDisallowSystem().GetValue(),
		disallowAll:     r.GetDisallowAll().GetValue(),
		disallowIsError: r.GetDisallowIsError().GetValue(),
	}
	var err error
	if re := r.GetAllowExpression().GetRegex(); re != "" {
		if m.allowExpr, err = regexp.Compile(re); err != nil {
			return nil, fmt.Errorf("mutation_rules.allow_expression: %w", err)
		}
	}
	if re := r.GetDisallowExpression().GetRegex(); re != "" {
		if m.disallowExpr, err = regexp.Compile(re); err != nil {
			return nil, fmt.Errorf("mutation_rules.disallow_expression: %w", err)
		}
	}
	return m, nil
}

// routingHeaders may only change with allow_all_routing (§2.4).
var routingHeaders = map[string]bool{"host": true, ":authority": true, ":method": true, ":scheme": true}

// allowed mirrors Envoy's mutation_rules Checker: disallow_expression always wins,
// allow_expression overrides everything else (§2.4). replace is CONTINUE_AND_REPLACE, where
// :method may change (§1.7).
func (m *mutationRules) allowed(name string, replace bool) bool {
	switch {
	case m.disallowExpr != nil && m.disallowExpr.MatchString(name):
		return false
	case m.allowExpr != nil && m.allowExpr.MatchString(name):
		return true
	case m.disallowAll:
		return false
	case m.disallowSystem && (strings.HasPrefix(name, ":") || name == "host"):
		return false
	case routingHeaders[name]:
		return m.allowAllRouting || (replace && name == ":method")
	case strings.HasPrefix(name, "x-envoy-"):
		return m.allowEnvoy
	}
	return true
}

// mutateOptions describes the context in which a HeaderMutation is applied.
type mutateOptions struct {
	replace            bool // CONTINUE_AND_REPLACE headers reply
	stripContentLength bool // content-length sets are skipped silently (§1.7)
}

// mutationError is a header mutation that Envoy treats as an error: the local reply is
// status_on_error whatever failure_mode_allow says (§3.3).
type mutationError struct{ msg string }

func (e *mutationError) Error() string { return e.msg }

// applyMutation applies m to h: removes first, then sets, reading only raw_value (§1.7).
// It returns how many mutations the rules rejected (§2.4).
func (p *procFilter) applyMutation(h *headerMap, m *v3procservicepb.HeaderMutation, o mutateOptions) error {
	if m == nil {
		return nil
	}
	for _, name := range m.GetRemoveHeaders() {
		name = strings.ToLower(name)
		// Removing a pseudo-header or host is always ignored (§2.4).
		if strings.HasPrefix(name, ":") || name == "host" {
			continue
		}
		if err := p.check(name, o); err != nil {
			if err == errRejected {
				continue
			}
			return err
		}
		h.del(name)
	}
	for _, opt := range m.GetSetHeaders() {
		//lint:ignore SA1019 Envoy's ext_proc filter still reads the legacy append field
		appendValue := opt.GetAppend().GetValue()
		if err := p.applySet(h, opt.GetHeader().GetKey(), opt.GetHeader().GetRawValue(),
			appendValue, o); err != nil {
			return err
		}
	}
	return nil
}

func (p *procFilter) applySet(h *headerMap, key string, raw []byte, appendValue bool, o mutateOptions) error {
	name := strings.ToLower(key)
	// Only raw_value is read: a header sent with `value` alone becomes empty (§1.7).
	val := string(raw)
	if !validHeaderName(name) || !validHeaderValue(val) {
		return &mutationError{fmt.Sprintf("invalid header %q", name)}
	}
	if name == "content-length" && o.stripContentLength {
		return nil
	}
	if appendValue && strings.HasPrefix(name, ":") {
		p.rejected()
		return nil
	}
	if name == ":status" {
		if code, err := strconv.Atoi(val); err != nil || code < 200 {
			p.rejected()
			return nil
		}
	}
	if err := p.check(name, o); err != nil {
		if err == errRejected {
			return nil
		}
		return err
	}
	if appendValue {
		h.add(name, val)
	} else {
		h.set(name, val)
	}
	return nil
}

// errRejected marks a mutation that is silently ignored (and counted).
var errRejected = fmt.Errorf("header mutation rejected")

func (p *procFilter) check(name string, o mutateOptions) error {
	if p.cfg.rules.allowed(name, o.replace) {
		return nil
	}
	p.rejected()
	if p.cfg.rules.disallowIsError {
		return &mutationError{fmt.Sprintf("header mutation of %q disallowed", name)}
	}
	return errRejected
}

func (p *procFilter) rejected() { p.px.stats.rejectedHeaderMutations.Add(1) }
