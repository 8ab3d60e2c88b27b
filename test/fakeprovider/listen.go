package fakeprovider

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// readHeaderTimeout bounds how long a client may take to send request headers.
const readHeaderTimeout = 10 * time.Second

// Running is a [Server] listening on a TCP address.
type Running struct {
	srv      *http.Server
	ln       net.Listener
	handlers sync.WaitGroup
	done     chan struct{} // closed when Serve has returned
	stop     func() bool   // detaches the ctx watcher
	once     sync.Once
	closeErr error
}

// Listen serves s on addr (for example "127.0.0.1:0") until ctx is done or
// [Running.Close] is called. ctx only bounds the lifetime of the server; cancelling it closes
// the listener and all connections.
func Listen(ctx context.Context, addr string, s *Server) (*Running, error) {
	var lc net.ListenConfig
	ln, err := lc.Listen(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listening on %s: %w", addr, err)
	}
	r := &Running{ln: ln, done: make(chan struct{})}
	r.srv = &http.Server{
		Handler:           r.track(s),
		ReadHeaderTimeout: readHeaderTimeout,
	}
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(ln)
	}()
	r.stop = context.AfterFunc(ctx, r.shutdown)
	s.logger.Info("listening", "addr", ln.Addr().String())
	return r, nil
}

// track counts in-flight requests so Close can wait for their handlers.
func (r *Running) track(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.handlers.Add(1)
		defer r.handlers.Done()
		h.ServeHTTP(w, req)
	})
}

// Addr returns the listening address as host:port.
func (r *Running) Addr() string { return r.ln.Addr().String() }

// BaseURL returns the OpenAI base URL of the server, "http://<addr>/v1".
func (r *Running) BaseURL() string { return "http://" + r.Addr() + "/v1" }

// Close stops the server at once: it closes the listener and every connection (in-flight
// streams see their request context cancelled) and waits for handlers to return. It is safe
// to call more than once.
func (r *Running) Close() error {
	r.stop()
	r.shutdown()
	return r.closeErr
}

func (r *Running) shutdown() {
	r.once.Do(func() {
		err := r.srv.Close()
		<-r.done
		r.handlers.Wait()
		if err != nil && !errors.Is(err, net.ErrClosed) {
			r.closeErr = fmt.Errorf("closing server: %w", err)
		}
	})
}
