// Batched ingest of the Go SDK: events sent over one StreamEvents call, one result per event back.
package auditlog

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"

	auditlogv1 "github.com/auditlog/auditlog/clients/go/auditlog/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
)

// MaxStreamBatch is the contract's batch limit: a request carries at most as many events as a
// LogEvents request takes.
const MaxStreamBatch = 1000

// A default gRPC server refuses messages over 4 MiB and the refusal ends the whole stream, so a
// batch stops short of that (with room for framing); a single larger event still goes alone.
const maxBatchBytes = 4<<20 - 64<<10

// StreamOptions tune an EventStream; the zero value is fine.
type StreamOptions struct {
	// MaxBatch caps the events of one request (0 means MaxStreamBatch, which is also the most).
	MaxBatch int
	// MaxInFlight caps the events sent and not yet returned by Recv (0 means 4 × MaxBatch), so a
	// slow reader slows the sender and memory stays bounded.
	MaxInFlight int
	// CallOptions are passed to the StreamEvents call.
	CallOptions []grpc.CallOption
}

// streamRequest is one request's events; first numbers the first of them in the caller's order.
type streamRequest struct {
	first  int
	events []*auditlogv1.AuditEvent
}

func (r streamRequest) message() *auditlogv1.StreamEventsRequest {
	// A lone event goes as `event`, the one-event message every server takes.
	if len(r.events) == 1 {
		return &auditlogv1.StreamEventsRequest{Event: r.events[0]}
	}
	return &auditlogv1.StreamEventsRequest{Events: r.events}
}

// EventStream sends the events of a channel over one StreamEvents call and returns one
// StreamEventResult per event from Recv, in the order of the events (GetAck or GetError).
//
// Each request carries the events waiting in the channel when it is sent: a lone event goes at
// once, and while earlier requests are unanswered the next ones grow, up to MaxBatch and about
// 4 MiB. A server whose batch limit is lower answers BATCH_TOO_LARGE for the whole request,
// storing none of it; the stream then sends those events again in smaller requests and keeps the
// smaller size, so Recv never returns that error (events refused that way may be stored after
// events sent behind them). Empty event ids are filled in (a UUIDv7, in the event itself), so
// sending an event again after a failure stores it once.
type EventStream struct {
	stream grpc.BidiStreamingClient[auditlogv1.StreamEventsRequest, auditlogv1.StreamEventsResponse]
	cancel context.CancelFunc
	events <-chan *auditlogv1.AuditEvent
	window int

	// sent is owned by the sender until a request is written, then by Recv.
	sent     chan streamRequest
	answered map[int]*auditlogv1.StreamEventResult
	nextOut  int

	mu         sync.Mutex
	wake       chan struct{} // a send is worth another look: a resend, a freed place
	limit      int           // the largest request this server took or is believed to take
	resend     []streamRequest
	numbered   int
	inFlight   int // numbered and not yet returned by Recv
	sourceDone bool
	held       *auditlogv1.AuditEvent // read from the channel, but it did not fit its request
}

// StreamEvents starts a StreamEvents call that sends the events read from events until the
// channel is closed; read the results with Recv. Cancel ctx or call Close to stop early.
func StreamEvents(ctx context.Context, client auditlogv1.AuditLogServiceClient, events <-chan *auditlogv1.AuditEvent, opts StreamOptions) (*EventStream, error) {
	maxBatch := opts.MaxBatch
	if maxBatch <= 0 || maxBatch > MaxStreamBatch {
		// The contract's limit is a ceiling: a larger request would only come back refused.
		maxBatch = MaxStreamBatch
	}
	window := opts.MaxInFlight
	if window <= 0 {
		window = 4 * maxBatch
	}
	callCtx, cancel := context.WithCancel(ctx)
	stream, err := client.StreamEvents(callCtx, opts.CallOptions...)
	if err != nil {
		cancel()
		return nil, err
	}
	s := &EventStream{
		stream: stream, cancel: cancel, events: events, window: window,
		sent: make(chan streamRequest, window), answered: map[int]*auditlogv1.StreamEventResult{},
		wake: make(chan struct{}, 1), limit: maxBatch,
	}
	go s.send(callCtx)
	return s, nil
}

// Close ends the call; results not returned yet are lost (the events may or may not be stored).
func (s *EventStream) Close() { s.cancel() }

// Recv returns the result of the next event, in the order the events were sent. It returns
// io.EOF once the channel is closed and every event has its result, and the call's error when
// the call fails (events without a result by then may or may not be stored).
func (s *EventStream) Recv() (*auditlogv1.StreamEventResult, error) {
	for {
		if result, ok := s.answered[s.nextOut]; ok {
			delete(s.answered, s.nextOut)
			s.nextOut++
			s.mu.Lock()
			s.inFlight--
			s.mu.Unlock()
			s.poke()
			return result, nil
		}
		response, err := s.stream.Recv()
		if errors.Is(err, io.EOF) {
			s.mu.Lock()
			missing := s.numbered - s.nextOut
			s.mu.Unlock()
			if missing > 0 {
				return nil, fmt.Errorf("auditlog: the server ended the stream with %d events unanswered", missing)
			}
			return nil, io.EOF
		}
		if err != nil {
			return nil, err
		}
		s.answer(<-s.sent, response)
	}
}

// answer files the results of one request by event number, or queues its events again.
func (s *EventStream) answer(request streamRequest, response *auditlogv1.StreamEventsResponse) {
	n := len(request.events)
	if n > 1 && response.GetError().GetReason() == auditlogv1.ErrorReason_ERROR_REASON_BATCH_TOO_LARGE {
		// None of it was taken: send it again in halves (or smaller, if the limit already is).
		s.mu.Lock()
		s.limit = max(1, min(s.limit, n/2))
		for start := 0; start < n; start += s.limit {
			end := min(start+s.limit, n)
			s.resend = append(s.resend, streamRequest{first: request.first + start, events: request.events[start:end]})
		}
		s.mu.Unlock()
		s.poke()
		return
	}
	for i := range n {
		var result *auditlogv1.StreamEventResult
		switch {
		case i < len(response.GetResults()):
			result = response.GetResults()[i]
		case response.GetAck() != nil:
			result = &auditlogv1.StreamEventResult{Result: &auditlogv1.StreamEventResult_Ack{Ack: response.GetAck()}}
		default:
			// An error for the whole request is every one of its events' error.
			result = &auditlogv1.StreamEventResult{Result: &auditlogv1.StreamEventResult_Error{Error: response.GetError()}}
		}
		s.answered[request.first+i] = result
	}
}

func (s *EventStream) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// send writes requests until the source is done and every event is answered, then half-closes.
// A failed Send ends it: Recv reports the call's status.
func (s *EventStream) send(ctx context.Context) {
	for {
		request, ok := s.next(ctx)
		if !ok {
			return
		}
		s.sent <- request
		if err := s.stream.Send(request.message()); err != nil {
			return
		}
	}
}

// next waits for the next request to send; false when there is none (half-closed) or ctx is done.
func (s *EventStream) next(ctx context.Context) (streamRequest, bool) {
	for {
		s.mu.Lock()
		if len(s.resend) > 0 {
			request := s.resend[0]
			s.resend = s.resend[1:]
			s.mu.Unlock()
			return request, true
		}
		room := min(s.limit, s.window-s.inFlight)
		if s.held != nil && room > 0 {
			request := s.take(s.held, room)
			s.mu.Unlock()
			return request, true
		}
		if s.sourceDone && s.inFlight == 0 {
			// Half-close only once every event is answered: a refused batch must still be resent.
			s.mu.Unlock()
			_ = s.stream.CloseSend()
			return streamRequest{}, false
		}
		source := s.events
		if s.sourceDone || room <= 0 {
			source = nil // nothing to read: wait for a resend or a freed place
		}
		s.mu.Unlock()
		select {
		case event, ok := <-source:
			s.mu.Lock()
			if !ok {
				s.sourceDone = true
				s.mu.Unlock()
				continue
			}
			// The limit may have dropped meanwhile; places are only ever freed.
			request := s.take(event, max(1, min(s.limit, s.window-s.inFlight)))
			s.mu.Unlock()
			return request, true
		case <-s.wake:
		case <-ctx.Done():
			return streamRequest{}, false
		}
	}
}

// take makes a request of first and the events already waiting in the channel, at most room of
// them and about maxBatchBytes; it is called with mu held.
func (s *EventStream) take(first *auditlogv1.AuditEvent, room int) streamRequest {
	s.held = nil
	events := []*auditlogv1.AuditEvent{withID(first)}
	size := proto.Size(first)
	for len(events) < room && !s.sourceDone {
		select {
		case event, ok := <-s.events:
			if !ok {
				s.sourceDone = true
				continue
			}
			if size += proto.Size(event); size > maxBatchBytes {
				s.held = event
				room = 0
				continue
			}
			events = append(events, withID(event))
		default:
			room = 0
		}
	}
	request := streamRequest{first: s.numbered, events: events}
	s.numbered += len(events)
	s.inFlight += len(events)
	return request
}

func withID(event *auditlogv1.AuditEvent) *auditlogv1.AuditEvent {
	if event.GetId() == "" {
		event.Id = NewEventID()
	}
	return event
}
