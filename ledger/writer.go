package ledger

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/cenkalti/backoff/v5"
)

// ErrWriterClosed is returned by [Writer.Record] after [Writer.Close].
var ErrWriterClosed = errors.New("ledger: writer closed")

// WriterOptions configures a [Writer]. Zero fields take the defaults shown.
type WriterOptions struct {
	// MaxRows is the largest batch. Default 500.
	MaxRows int
	// MaxDelay is the longest a row waits for its batch. Default 200ms.
	MaxDelay time.Duration
	// QueueSize bounds the queue of rows waiting for a batch. Default 10000.
	QueueSize int
	// WriteTimeout bounds one store write. Default 10s.
	WriteTimeout time.Duration
	// RetryInitial and RetryMax bound the exponential backoff between attempts while the
	// store fails. Default 100ms and 5s.
	RetryInitial, RetryMax time.Duration
	// Metrics receives the writer's metrics. Default: unregistered metrics.
	Metrics *Metrics
	// Logger receives lifecycle and outage messages. Default: discarded.
	Logger *slog.Logger
}

// Writer writes usage rows to a [Store] in batches, from a bounded in-memory queue, without
// losing any.
//
// The guarantee: once [Writer.Record] returns nil, the row reaches the store exactly once,
// unless the process dies while the row is still in the in-memory queue (at most QueueSize
// rows, each at most MaxDelay old). Before a batch is sent, it is appended to the [Spool]
// and fsync'd; the spool is released only after the store commits. A crash between the two
// leaves the batch in the spool, and the next Writer on that spool sends it again; rows
// already committed are skipped by the store's unique request ID, so replay is exactly-once.
// While the store fails, new batches keep going to the spool and sending is retried with
// exponential backoff. When the queue is full, Record appends the row to the spool itself.
//
// A Writer is safe for concurrent use.
type Writer struct {
	store Store
	spool *Spool
	opts  WriterOptions
	m     *Metrics
	log   *slog.Logger

	mu      sync.RWMutex // guards closed against Record's send
	closed  bool
	queue   chan Row
	kick    chan struct{}
	closing chan context.Context
	done    chan error
}

// NewWriter starts a writer over st and sp. Rows already in sp (left by an earlier process)
// are sent first. Call [Writer.Close] to stop it.
func NewWriter(st Store, sp *Spool, o WriterOptions) *Writer {
	if o.MaxRows <= 0 {
		o.MaxRows = 500
	}
	if o.MaxDelay <= 0 {
		o.MaxDelay = 200 * time.Millisecond
	}
	if o.QueueSize <= 0 {
		o.QueueSize = 10000
	}
	if o.WriteTimeout <= 0 {
		o.WriteTimeout = 10 * time.Second
	}
	if o.RetryInitial <= 0 {
		o.RetryInitial = 100 * time.Millisecond
	}
	if o.RetryMax <= 0 {
		o.RetryMax = 5 * time.Second
	}
	if o.Metrics == nil {
		o.Metrics = NewMetrics(nil)
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	w := &Writer{
		store: st, spool: sp, opts: o, m: o.Metrics,
		log:     o.Logger.With("component", "ledger_writer"),
		queue:   make(chan Row, o.QueueSize),
		kick:    make(chan struct{}, 1),
		closing: make(chan context.Context, 1),
		done:    make(chan error, 1),
	}
	w.m.spoolBytes.Set(float64(sp.Size()))
	if sp.Size() > 0 {
		w.log.Info("replaying spooled usage rows", "bytes", sp.Size())
		w.kick <- struct{}{}
	}
	go w.run()
	return w
}

// Record queues r for writing. It does not block on the store: when the queue is full, r is
// appended to the spool. It fails only after Close, or when the queue is full and the spool
// cannot be written.
func (w *Writer) Record(r Row) error {
	if r.RequestID == "" {
		return errors.New("ledger: row has no request ID")
	}
	w.mu.RLock()
	defer w.mu.RUnlock()
	if w.closed {
		return ErrWriterClosed
	}
	select {
	case w.queue <- r:
		w.m.queueDepth.Set(float64(len(w.queue)))
		return nil
	default:
	}
	if _, _, err := w.spool.Append([]Row{r}); err != nil {
		return fmt.Errorf("queue full: %w", err)
	}
	w.m.spoolBytes.Set(float64(w.spool.Size()))
	select {
	case w.kick <- struct{}{}:
	default:
	}
	return nil
}

// Close stops accepting rows, then writes the queue and the spool to the store, retrying
// until it succeeds or ctx ends. Rows not committed by then stay in the spool for the next
// Writer; Close reports them in its error. The spool is closed either way, not the store.
func (w *Writer) Close(ctx context.Context) error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrWriterClosed
	}
	w.closed = true
	w.mu.Unlock()
	w.closing <- ctx
	err := <-w.done
	if cerr := w.spool.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing spool: %w", cerr)
	}
	return err
}

// writerState is the state of the writer's goroutine.
type writerState struct {
	batch   []Row
	failing bool // the last attempt failed; wait for the retry timer
	outage  bool // an outage was logged and has not ended
	bo      *backoff.ExponentialBackOff
	batchT  *time.Timer
	retryT  *time.Timer
}

func (w *Writer) run() {
	s := &writerState{
		bo:     backoff.NewExponentialBackOff(),
		batchT: time.NewTimer(time.Hour),
		retryT: time.NewTimer(time.Hour),
	}
	s.bo.InitialInterval, s.bo.MaxInterval = w.opts.RetryInitial, w.opts.RetryMax
	s.batchT.Stop()
	s.retryT.Stop()
	for {
		select {
		case r := <-w.queue:
			w.add(s, r)
		case <-s.batchT.C:
			w.flush(s)
		case <-w.kick:
			if !s.failing {
				w.drain(s)
			}
		case <-s.retryT.C:
			s.failing = false
			w.drain(s)
		case ctx := <-w.closing:
			w.done <- w.shutdown(ctx, s)
			return
		}
	}
}

func (w *Writer) add(s *writerState, r Row) {
	w.m.queueDepth.Set(float64(len(w.queue)))
	if len(s.batch) == 0 {
		s.batchT.Reset(w.opts.MaxDelay)
	}
	s.batch = append(s.batch, r)
	if len(s.batch) >= w.opts.MaxRows {
		w.flush(s)
	}
}

// flush writes the batch ahead to the spool, then sends it unless the store is known to be
// failing.
func (w *Writer) flush(s *writerState) {
	s.batchT.Stop()
	if len(s.batch) > 0 {
		w.m.batchRows.Observe(float64(len(s.batch)))
		start, end, err := w.spool.Append(s.batch)
		switch {
		case err != nil:
			// Without the spool the batch can only go straight to the store; keep it in
			// memory until that works.
			w.log.Error("spool write failed; holding batch in memory", "err", err,
				"rows", len(s.batch))
			if w.send(s.batch) != nil {
				s.batchT.Reset(w.opts.RetryMax)
				return
			}
		case start == 0 && !s.failing:
			// The common case: the spool holds this batch alone, so send it from memory
			// rather than reading it back. On failure it stays spooled for drain.
			if w.send(s.batch) == nil && w.spool.Release(end) == nil {
				s.batch = s.batch[:0]
				w.m.spoolBytes.Set(float64(w.spool.Size()))
				return
			}
		}
		s.batch = s.batch[:0]
		w.m.spoolBytes.Set(float64(w.spool.Size()))
	}
	if !s.failing {
		w.drain(s)
	}
}

// drain sends everything in the spool in MaxRows chunks and releases it once all committed.
// On failure it schedules a retry with backoff.
func (w *Writer) drain(s *writerState) {
	end := w.spool.Size()
	if end == 0 {
		return
	}
	chunk := make([]Row, 0, w.opts.MaxRows)
	err := w.spool.Replay(end, func(r Row) error {
		chunk = append(chunk, r)
		if len(chunk) < w.opts.MaxRows {
			return nil
		}
		err := w.send(chunk)
		chunk = chunk[:0]
		return err
	})
	if err == nil {
		err = w.send(chunk)
	}
	if err == nil {
		err = w.spool.Release(end)
	}
	w.m.spoolBytes.Set(float64(w.spool.Size()))
	if err != nil {
		wait := s.bo.NextBackOff()
		if !s.outage {
			w.log.Warn("usage store unavailable; spooling rows", "err", err, "retry_in", wait)
			s.outage = true
		}
		s.failing = true
		s.retryT.Reset(wait)
		return
	}
	if s.outage {
		w.log.Info("usage store available again; spool replayed")
		s.outage = false
	}
	s.failing = false
	s.bo.Reset()
}

// send writes rows to the store with the write timeout.
func (w *Writer) send(rows []Row) error {
	if len(rows) == 0 {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), w.opts.WriteTimeout)
	defer cancel()
	n, err := w.store.WriteUsage(ctx, rows)
	if err != nil {
		return err
	}
	w.m.rowsWritten.Add(float64(n))
	return nil
}

// shutdown moves the queue into the spool and sends the spool until it succeeds or ctx ends.
func (w *Writer) shutdown(ctx context.Context, s *writerState) error {
	for drained := false; !drained; {
		select {
		case r := <-w.queue:
			s.batch = append(s.batch, r)
		default:
			drained = true
		}
	}
	w.m.queueDepth.Set(0)
	for {
		s.failing = false
		w.flush(s)
		if w.spool.Size() == 0 && len(s.batch) == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("closing writer: %d spool bytes and %d rows not written: %w",
				w.spool.Size(), len(s.batch), ctx.Err())
		case <-s.retryT.C:
		case <-s.batchT.C:
		}
	}
}
