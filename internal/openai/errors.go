// Package openai holds small, fast helpers for the OpenAI HTTP wire format: error bodies,
// parsing and rewriting of request bodies, usage extraction and an incremental parser for
// server-sent events. It does not model the whole API; it reads only what the gateway needs
// and keeps the client's raw bytes for everything else.
package openai

import "encoding/json"

// Error types used in [Error.Type], as OpenAI's API sends them.
const (
	TypeInvalidRequest = "invalid_request_error"
	TypeServer         = "server_error"
)

// Error codes used in [Error.Code].
const (
	CodeModelNotFound     = "model_not_found"
	CodeModelNotSupported = "model_not_supported"
	CodeRequestTooLarge   = "request_too_large"
	CodeMethodNotAllowed  = "method_not_allowed"
	CodeNoProvider        = "no_provider"
)

// Error is an OpenAI API error. Its JSON form, from [Error.Body], is
// {"error":{"message":…,"type":…,"param":…,"code":…}}, with param and code null when empty.
type Error struct {
	// Message is a human-readable description. It must not quote user content.
	Message string
	// Type is the error class, such as [TypeInvalidRequest].
	Type string
	// Param names the offending request field, if any.
	Param string
	// Code is a machine-readable code, such as [CodeModelNotFound], if any.
	Code string
}

// Error returns the message.
func (e *Error) Error() string { return e.Message }

type errorJSON struct {
	Message string  `json:"message"`
	Type    string  `json:"type"`
	Param   *string `json:"param"`
	Code    *string `json:"code"`
}

// Body returns the error as an OpenAI error response body.
func (e *Error) Body() []byte {
	v := struct {
		Error errorJSON `json:"error"`
	}{errorJSON{Message: e.Message, Type: e.Type, Param: nullable(e.Param), Code: nullable(e.Code)}}
	b, err := json.Marshal(v)
	if err != nil {
		// Marshalling strings cannot fail; keep a valid body regardless.
		return []byte(`{"error":{"message":"internal error","type":"server_error"}}`)
	}
	return b
}

func nullable(s string) *string {
	if s == "" {
		return nil
	}
	return &s
}

// invalid returns an invalid_request_error about param.
func invalid(param, msg string) *Error {
	return &Error{Message: msg, Type: TypeInvalidRequest, Param: param}
}
