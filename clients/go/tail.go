// Retries of the Go SDK: the RetryInfo delay of an error, and a session tail that resumes by itself.
package auditlog

import (
	"context"
	"errors"
	"io"
	"time"

	auditlogv1 "github.com/auditlog/auditlog/clients/go/auditlog/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// CursorTrailer is the trailing metadata key under which the server sends the cursor a tail resumes
// from, whatever ended the call.
const CursorTrailer = "auditlog-cursor"

// RetryDelay returns the delay of the google.rpc.RetryInfo detail of err's gRPC status (rate limits
// send one with RESOURCE_EXHAUSTED), and false when there is none.
func RetryDelay(err error) (time.Duration, bool) {
	st, ok := status.FromError(err)
	if !ok || err == nil {
		return 0, false
	}
	for _, detail := range st.Details() {
		if info, ok := detail.(*errdetails.RetryInfo); ok && info.GetRetryDelay() != nil {
			return max(info.GetRetryDelay().AsDuration(), 0), true
		}
	}
	return 0, false
}

// TailOptions tune a SessionTail; the zero value is fine.
type TailOptions struct {
	// MaxRetries is how many failed calls in a row a tail retries before Recv returns the error
	// (0 means 10). A message received resets the count.
	MaxRetries int
	// InitialBackoff and MaxBackoff bound the exponential wait between retries when the server did
	// not say how long to wait (0 means 100 ms and 2 s).
	InitialBackoff, MaxBackoff time.Duration
	// OnRetry, when set, is called before each resume with the error that ended the call and how
	// long the tail waits before the next one (e.g. to log it).
	OnRetry func(err error, wait time.Duration)
	// CallOptions are passed to every TailSession call.
	CallOptions []grpc.CallOption
}

// SessionTail follows a co-browsing session like TailSession, but resumes by itself from the last
// cursor when a call ends early: the server went away or shed load (with backoff, or after the
// delay of the error's RetryInfo), or the token expired (at once: the next call asks the connection's
// TokenSource for a token again). It never returns an event twice.
type SessionTail struct {
	ctx     context.Context
	client  auditlogv1.AuditLogServiceClient
	request *auditlogv1.TailSessionRequest
	opts    TailOptions

	stream   grpc.ServerStreamingClient[auditlogv1.TailSessionResponse]
	cancel   context.CancelFunc
	cursor   string
	lastSeq  int64
	failures int
	backoff  time.Duration
	resumes  int
}

// TailSession starts following a session with client; cancel ctx to stop. The request's start
// (cursor, time, beginning or now) applies to the first call only; resumes use the last cursor.
func TailSession(ctx context.Context, client auditlogv1.AuditLogServiceClient, request *auditlogv1.TailSessionRequest, opts TailOptions) *SessionTail {
	if opts.MaxRetries <= 0 {
		opts.MaxRetries = 10
	}
	if opts.InitialBackoff <= 0 {
		opts.InitialBackoff = 100 * time.Millisecond
	}
	if opts.MaxBackoff <= 0 {
		opts.MaxBackoff = 2 * time.Second
	}
	return &SessionTail{ctx: ctx, client: client, request: request, opts: opts, cursor: request.GetCursor(), backoff: opts.InitialBackoff}
}

// Cursor is the cursor of the last message returned: a later TailSession from it continues after it.
func (t *SessionTail) Cursor() string { return t.cursor }

// Resumes is how many times the tail started a new call after one ended early.
func (t *SessionTail) Resumes() int { return t.resumes }

// Recv returns the next message: a batch of events not returned before, caught_up (again after
// each resume, when the new call reaches the head) or a heartbeat. It returns io.EOF when the server
// ended the tail normally, ctx's error once ctx is done, and the call's error when it is not worth
// retrying or retries ran out.
func (t *SessionTail) Recv() (*auditlogv1.TailSessionResponse, error) {
	for {
		if t.stream == nil {
			if err := t.ctx.Err(); err != nil {
				return nil, err
			}
			callCtx, cancel := context.WithCancel(t.ctx)
			stream, err := t.client.TailSession(callCtx, t.nextRequest(), t.opts.CallOptions...)
			if err != nil {
				cancel()
				if err := t.retry(err, nil); err != nil {
					return nil, err
				}
				continue
			}
			t.stream, t.cancel = stream, cancel
		}
		msg, err := t.stream.Recv()
		if err != nil {
			trailer := t.stream.Trailer()
			t.Close()
			if errors.Is(err, io.EOF) {
				return nil, io.EOF
			}
			if err := t.retry(err, trailer); err != nil {
				return nil, err
			}
			continue
		}
		t.failures, t.backoff = 0, t.opts.InitialBackoff
		t.cursor = msg.GetCursor()
		if batch := msg.GetEvents(); batch != nil {
			fresh := make([]*auditlogv1.AuditEvent, 0, len(batch.GetEvents()))
			for _, e := range batch.GetEvents() {
				if e.GetSequence() > t.lastSeq {
					fresh = append(fresh, e)
					t.lastSeq = e.GetSequence()
				}
			}
			if len(fresh) == 0 {
				continue
			}
			if len(fresh) < len(batch.GetEvents()) {
				msg = &auditlogv1.TailSessionResponse{Cursor: msg.GetCursor(), Kind: &auditlogv1.TailSessionResponse_Events{
					Events: &auditlogv1.TailEventBatch{Events: fresh},
				}}
			}
		}
		return msg, nil
	}
}

// Close ends the current call; a later Recv starts a new one from the last cursor.
func (t *SessionTail) Close() {
	if t.cancel != nil {
		t.cancel()
	}
	t.stream, t.cancel = nil, nil
}

func (t *SessionTail) nextRequest() *auditlogv1.TailSessionRequest {
	if t.cursor == "" {
		return t.request
	}
	return &auditlogv1.TailSessionRequest{
		TenantId: t.request.GetTenantId(), SessionId: t.request.GetSessionId(), EventTypes: t.request.GetEventTypes(),
		Start: &auditlogv1.TailSessionRequest_Cursor{Cursor: t.cursor},
	}
}

// retry waits before the next call after err ended one, or returns the error to give the caller.
func (t *SessionTail) retry(err error, trailer metadata.MD) error {
	if ctxErr := t.ctx.Err(); ctxErr != nil {
		return ctxErr
	}
	fromTrailer := ""
	if v := trailer.Get(CursorTrailer); len(v) > 0 {
		fromTrailer = v[0]
	}
	if fromTrailer != "" {
		t.cursor = fromTrailer
	}
	var wait time.Duration
	switch status.Code(err) {
	case codes.Unauthenticated:
		// The token expired under a running tail: the server says where to resume, and the next
		// call gets a fresh token. Without a cursor, or when a fresh token fails again before any
		// message, the token itself is the problem, and only the caller can fix it.
		if fromTrailer == "" || t.failures > 0 {
			return err
		}
	case codes.ResourceExhausted, codes.Unavailable, codes.DeadlineExceeded, codes.Internal, codes.Unknown, codes.Canceled:
		if delay, ok := RetryDelay(err); ok {
			wait = delay
		} else {
			wait = t.backoff
			t.backoff = min(2*t.backoff, t.opts.MaxBackoff)
		}
	default:
		return err
	}
	if t.failures >= t.opts.MaxRetries {
		return err
	}
	t.failures++
	t.resumes++
	if t.opts.OnRetry != nil {
		t.opts.OnRetry(err, wait)
	}
	if wait > 0 {
		timer := time.NewTimer(wait)
		defer timer.Stop()
		select {
		case <-timer.C:
		case <-t.ctx.Done():
			return t.ctx.Err()
		}
	}
	return nil
}
