package standin

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"
)

// boundListener is one bound LDS listener serving HTTP/1.1.
type boundListener struct {
	cfg atomic.Pointer[listenerConfig]
	ln  net.Listener
	srv *http.Server
}

func (bl *boundListener) close() error {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := bl.srv.Shutdown(ctx); err != nil {
		return errors.Join(err, bl.srv.Close())
	}
	return nil
}

// reconcileListeners binds new listeners, swaps the config of kept ones and closes removed
// ones. A listener keeps its socket while its configured address is unchanged, so a port-0
// listener keeps its ephemeral port across updates.
func (p *Proxy) reconcileListeners(ctx context.Context, next map[string]*listenerConfig) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errors.New("proxy closed")
	}
	added := map[string]*boundListener{}
	for name, lc := range next {
		if old := p.listeners[name]; old != nil && old.cfg.Load().address == lc.address {
			continue
		}
		bl, err := p.bind(ctx, lc)
		if err != nil {
			for _, b := range added {
				_ = b.close()
			}
			return err
		}
		added[name] = bl
	}
	for name, old := range p.listeners {
		if nl := next[name]; nl == nil || added[name] != nil {
			_ = old.close()
			delete(p.listeners, name)
		} else {
			old.cfg.Store(nl)
		}
	}
	for name, bl := range added {
		p.listeners[name] = bl
		go func() { _ = bl.srv.Serve(bl.ln) }()
		p.log.Info("listener bound", "listener", name, "addr", bl.ln.Addr().String())
	}
	return nil
}

func (p *Proxy) bind(ctx context.Context, lc *listenerConfig) (*boundListener, error) {
	var lcfg net.ListenConfig
	ln, err := lcfg.Listen(ctx, "tcp", lc.address)
	if err != nil {
		return nil, fmt.Errorf("listener %q: binding %s: %w", lc.name, lc.address, err)
	}
	bl := &boundListener{ln: ln}
	bl.cfg.Store(lc)
	bl.srv = &http.Server{
		Handler:           http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { p.serveHTTP(w, r, bl) }),
		ReadHeaderTimeout: 10 * time.Second,
	}
	return bl, nil
}

// newRequestID returns a random UUIDv4, as the HCM generates for x-request-id.
func newRequestID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
