package extproc

import (
	"strconv"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3procfilterpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
	v3procservicepb "github.com/envoyproxy/go-control-plane/envoy/service/ext_proc/v3"
	v3typepb "github.com/envoyproxy/go-control-plane/envoy/type/v3"

	"github.com/phochat/phogate/internal/openai"
)

// setHeader builds a header mutation entry. Envoy reads only raw_value; a value given in
// value alone sets the header to an empty string (envoy-notes §1.2, §1.7). append is left
// unset, which overwrites.
func setHeader(key, value string) *v3corepb.HeaderValueOption {
	return &v3corepb.HeaderValueOption{
		Header: &v3corepb.HeaderValue{Key: key, RawValue: []byte(value)},
	}
}

func continueRequestHeaders(cr *v3procservicepb.CommonResponse) *v3procservicepb.ProcessingResponse {
	return &v3procservicepb.ProcessingResponse{
		Response: &v3procservicepb.ProcessingResponse_RequestHeaders{
			RequestHeaders: &v3procservicepb.HeadersResponse{Response: cr},
		},
	}
}

func continueResponseHeaders(cr *v3procservicepb.CommonResponse) *v3procservicepb.ProcessingResponse {
	return &v3procservicepb.ProcessingResponse{
		Response: &v3procservicepb.ProcessingResponse_ResponseHeaders{
			ResponseHeaders: &v3procservicepb.HeadersResponse{Response: cr},
		},
	}
}

func continueRequestBody(cr *v3procservicepb.CommonResponse) *v3procservicepb.ProcessingResponse {
	return &v3procservicepb.ProcessingResponse{
		Response: &v3procservicepb.ProcessingResponse_RequestBody{
			RequestBody: &v3procservicepb.BodyResponse{Response: cr},
		},
	}
}

// emptyResponseBody is the reply to a response body message that leaves the chunk as it is.
func emptyResponseBody() *v3procservicepb.ProcessingResponse {
	return &v3procservicepb.ProcessingResponse{
		Response: &v3procservicepb.ProcessingResponse_ResponseBody{
			ResponseBody: &v3procservicepb.BodyResponse{},
		},
	}
}

func emptyTrailers(response bool) *v3procservicepb.ProcessingResponse {
	if response {
		return &v3procservicepb.ProcessingResponse{
			Response: &v3procservicepb.ProcessingResponse_ResponseTrailers{
				ResponseTrailers: &v3procservicepb.TrailersResponse{},
			},
		}
	}
	return &v3procservicepb.ProcessingResponse{
		Response: &v3procservicepb.ProcessingResponse_RequestTrailers{
			RequestTrailers: &v3procservicepb.TrailersResponse{},
		},
	}
}

// immediate answers the client directly with a JSON body. Envoy sets content-length itself
// and keeps our content-type (envoy-notes §1.6).
func immediate(status int, body []byte, requestID, details string) *v3procservicepb.ProcessingResponse {
	hm := &v3procservicepb.HeaderMutation{
		SetHeaders: []*v3corepb.HeaderValueOption{setHeader("content-type", "application/json")},
	}
	if requestID != "" {
		hm.SetHeaders = append(hm.SetHeaders, setHeader("x-request-id", requestID))
	}
	return &v3procservicepb.ProcessingResponse{
		Response: &v3procservicepb.ProcessingResponse_ImmediateResponse{
			ImmediateResponse: &v3procservicepb.ImmediateResponse{
				Status:  &v3typepb.HttpStatus{Code: v3typepb.StatusCode(status)},
				Headers: hm,
				Body:    body,
				Details: details,
			},
		},
	}
}

// httpError is a client-facing error: an HTTP status and an OpenAI error body.
type httpError struct {
	status int
	err    *openai.Error
}

func (e *httpError) Error() string { return strconv.Itoa(e.status) + ": " + e.err.Message }

// bodyModes is a mode_override that sets both body modes. Envoy always takes both body modes
// from an override, so the one we keep must be repeated (envoy-notes §1.8).
func bodyModes(req, resp v3procfilterpb.ProcessingMode_BodySendMode) *v3procfilterpb.ProcessingMode {
	return &v3procfilterpb.ProcessingMode{RequestBodyMode: req, ResponseBodyMode: resp}
}
