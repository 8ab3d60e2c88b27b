package standin

import (
	"errors"
	"fmt"
	"time"

	v3corepb "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	v3extprocpb "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_proc/v3"
)

// defaultMessageTimeout is Envoy's message_timeout default (§2.2).
const defaultMessageTimeout = 200 * time.Millisecond

// extProcConfig is a compiled ExternalProcessor filter config.
type extProcConfig struct {
	cluster              string
	initialMetadata      []*v3corepb.HeaderValue
	failureModeAllow     bool
	mode                 *v3extprocpb.ProcessingMode // filter level, defaults filled in
	requestAttrs         []string
	responseAttrs        []string
	messageTimeout       time.Duration
	maxMessageTimeout    time.Duration
	rules                *mutationRules
	allowModeOverride    bool
	allowedOverrideModes []*v3extprocpb.ProcessingMode
	sendBodyWithoutWait  bool
	routeCacheAction     v3extprocpb.ExternalProcessor_RouteCacheAction
	statusOnError        int
	disableImmediate     bool
	allowContentLength   bool
}

func compileExtProc(ep *v3extprocpb.ExternalProcessor) (*extProcConfig, error) {
	// §2.1 config-load checks beyond PGV, for the subset the stand-in implements.
	if ep.GetHttpService() != nil {
		return nil, errors.New("http_service is not supported by the stand-in")
	}
	cluster := ep.GetGrpcService().GetEnvoyGrpc().GetClusterName()
	if cluster == "" {
		return nil, errors.New("grpc_service.envoy_grpc.cluster_name is required")
	}
	if ep.GetDisableClearRouteCache() &&
		ep.GetRouteCacheAction() != v3extprocpb.ExternalProcessor_DEFAULT {
		return nil, errors.New("disable_clear_route_cache conflicts with route_cache_action")
	}
	if ep.GetObservabilityMode() {
		return nil, errors.New("observability_mode is not supported by the stand-in")
	}
	mode, err := effectiveMode(defaultMode(), ep.GetProcessingMode(), false)
	if err != nil {
		return nil, err
	}
	rules, err := compileMutationRules(ep.GetMutationRules())
	if err != nil {
		return nil, err
	}
	c := &extProcConfig{
		cluster:              cluster,
		initialMetadata:      ep.GetGrpcService().GetInitialMetadata(),
		failureModeAllow:     ep.GetFailureModeAllow(),
		mode:                 mode,
		requestAttrs:         ep.GetRequestAttributes(),
		responseAttrs:        ep.GetResponseAttributes(),
		messageTimeout:       defaultMessageTimeout,
		maxMessageTimeout:    ep.GetMaxMessageTimeout().AsDuration(),
		rules:                rules,
		allowModeOverride:    ep.GetAllowModeOverride(),
		allowedOverrideModes: ep.GetAllowedOverrideModes(),
		sendBodyWithoutWait:  ep.GetSendBodyWithoutWaitingForHeaderResponse(),
		routeCacheAction:     ep.GetRouteCacheAction(),
		statusOnError:        500,
		disableImmediate:     ep.GetDisableImmediateResponse(),
		allowContentLength:   ep.GetAllowContentLengthHeader(),
	}
	if ep.GetDisableClearRouteCache() {
		c.routeCacheAction = v3extprocpb.ExternalProcessor_RETAIN
	}
	if t := ep.GetMessageTimeout(); t != nil {
		c.messageTimeout = t.AsDuration()
	}
	// §2.1: status_on_error outside 400–599 silently becomes 500.
	if s := int(ep.GetStatusOnError().GetCode()); s >= 400 && s <= 599 {
		c.statusOnError = s
	}
	return c, nil
}

func defaultMode() *v3extprocpb.ProcessingMode {
	return &v3extprocpb.ProcessingMode{
		RequestHeaderMode:   v3extprocpb.ProcessingMode_SEND,
		ResponseHeaderMode:  v3extprocpb.ProcessingMode_SEND,
		RequestBodyMode:     v3extprocpb.ProcessingMode_NONE,
		ResponseBodyMode:    v3extprocpb.ProcessingMode_NONE,
		RequestTrailerMode:  v3extprocpb.ProcessingMode_SKIP,
		ResponseTrailerMode: v3extprocpb.ProcessingMode_SKIP,
	}
}

// effectiveMode lays m over base: header and trailer fields at DEFAULT keep the base value,
// and body modes are always taken from m (§1.4, §1.8).
func effectiveMode(base, m *v3extprocpb.ProcessingMode, override bool) (*v3extprocpb.ProcessingMode, error) {
	out := &v3extprocpb.ProcessingMode{
		RequestHeaderMode:   pick(m.GetRequestHeaderMode(), base.GetRequestHeaderMode()),
		ResponseHeaderMode:  pick(m.GetResponseHeaderMode(), base.GetResponseHeaderMode()),
		RequestTrailerMode:  pick(m.GetRequestTrailerMode(), base.GetRequestTrailerMode()),
		ResponseTrailerMode: pick(m.GetResponseTrailerMode(), base.GetResponseTrailerMode()),
		RequestBodyMode:     m.GetRequestBodyMode(),
		ResponseBodyMode:    m.GetResponseBodyMode(),
	}
	if override {
		// An override cannot change request_header_mode (§1.8).
		out.RequestHeaderMode = base.GetRequestHeaderMode()
	}
	for _, b := range []v3extprocpb.ProcessingMode_BodySendMode{out.RequestBodyMode, out.ResponseBodyMode} {
		switch b {
		case v3extprocpb.ProcessingMode_NONE, v3extprocpb.ProcessingMode_BUFFERED,
			v3extprocpb.ProcessingMode_STREAMED:
		default:
			return nil, fmt.Errorf("body mode %v is not supported by the stand-in", b)
		}
	}
	if out.RequestTrailerMode == v3extprocpb.ProcessingMode_SEND ||
		out.ResponseTrailerMode == v3extprocpb.ProcessingMode_SEND {
		return nil, errors.New("trailer mode SEND is not supported by the stand-in")
	}
	return out, nil
}

func pick(v, base v3extprocpb.ProcessingMode_HeaderSendMode) v3extprocpb.ProcessingMode_HeaderSendMode {
	if v == v3extprocpb.ProcessingMode_DEFAULT {
		return base
	}
	return v
}
