package xds

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"

	"go.yaml.in/yaml/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

// ParseEnvoyYAML parses an Envoy config written in YAML, such as a bootstrap, into m. It
// converts YAML to JSON and decodes it with protojson, which rejects unknown fields and
// bad enum names, so typos are errors. Every "@type" must be linked into the binary (see
// the blank imports of this package).
//
// Scalars are read as YAML 1.2 writes them, not as Envoy's examples risk under YAML 1.1
// (envoy-notes §6): yes/on/off stay strings, and an integer written with a leading zero,
// 0x or 0o is passed on as its literal text, which protojson refuses, instead of silently
// becoming 8 or 31. Quote such values or write them in decimal.
func ParseEnvoyYAML(b []byte, m proto.Message) error {
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(b)).Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("parsing envoy yaml: document is empty")
		}
		return fmt.Errorf("parsing envoy yaml: %w", err)
	}
	v, err := nodeValue(&doc)
	if err != nil {
		return fmt.Errorf("parsing envoy yaml: %w", err)
	}
	j, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("parsing envoy yaml: %w", err)
	}
	if err := protojson.Unmarshal(j, m); err != nil {
		return fmt.Errorf("decoding %s: %w", m.ProtoReflect().Descriptor().FullName(), err)
	}
	return nil
}

// jsonNumber matches the numbers JSON and YAML 1.2 agree on.
var jsonNumber = regexp.MustCompile(`^-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][-+]?[0-9]+)?$`)

// nodeValue turns a YAML node into a value for encoding/json.
func nodeValue(n *yaml.Node) (any, error) {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil, nil
		}
		return nodeValue(n.Content[0])
	case yaml.AliasNode:
		return nodeValue(n.Alias)
	case yaml.MappingNode:
		out := make(map[string]any, len(n.Content)/2)
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i]
			if k.Kind != yaml.ScalarNode {
				return nil, fmt.Errorf("line %d: mapping keys must be scalars", k.Line)
			}
			v, err := nodeValue(n.Content[i+1])
			if err != nil {
				return nil, err
			}
			out[k.Value] = v
		}
		return out, nil
	case yaml.SequenceNode:
		out := make([]any, 0, len(n.Content))
		for _, c := range n.Content {
			v, err := nodeValue(c)
			if err != nil {
				return nil, err
			}
			out = append(out, v)
		}
		return out, nil
	case yaml.ScalarNode:
		return scalarValue(n), nil
	}
	return nil, fmt.Errorf("line %d: unsupported YAML node", n.Line)
}

func scalarValue(n *yaml.Node) any {
	switch n.ShortTag() {
	case "!!null":
		return nil
	case "!!bool":
		// YAML 1.2 has only true and false; anything else the library calls a bool stays
		// text.
		switch n.Value {
		case "true", "True", "TRUE":
			return true
		case "false", "False", "FALSE":
			return false
		}
	case "!!int", "!!float":
		if jsonNumber.MatchString(n.Value) {
			return json.Number(n.Value)
		}
	}
	return n.Value
}
