package openai

import (
	"fmt"

	"github.com/tidwall/gjson"
	"github.com/tidwall/sjson"
)

// SetModel returns a copy of body with its top-level "model" set to model. Every other byte is
// kept as it was. body must be a JSON object with at most one "model" field, as
// [ParseChatRequest] and [ParseEmbeddingsRequest] ensure.
func SetModel(body []byte, model string) ([]byte, error) {
	out, err := sjson.SetBytes(body, "model", model)
	if err != nil {
		return nil, fmt.Errorf("setting model: %w", err)
	}
	return out, nil
}

// SetIncludeUsage returns a copy of body with stream_options.include_usage set to true, so a
// streamed answer ends with a chunk that carries usage. Other fields of stream_options are
// kept; a null stream_options is replaced by an object.
func SetIncludeUsage(body []byte) ([]byte, error) {
	var (
		out []byte
		err error
	)
	if so := gjson.GetBytes(body, "stream_options"); so.IsObject() {
		out, err = sjson.SetBytes(body, "stream_options.include_usage", true)
	} else {
		out, err = sjson.SetRawBytes(body, "stream_options", []byte(`{"include_usage":true}`))
	}
	if err != nil {
		return nil, fmt.Errorf("setting stream_options.include_usage: %w", err)
	}
	return out, nil
}
