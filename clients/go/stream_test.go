// Live tests of EventStream against AUDITLOG_ADDR (skipped when unset): batches, per-event results, one-event messages.
package auditlog_test

import (
	"context"
	"errors"
	"io"
	"os"
	"sync"
	"testing"
	"time"

	auditlog "github.com/auditlog/auditlog/clients/go"
	auditlogv1 "github.com/auditlog/auditlog/clients/go/auditlog/v1"
	"google.golang.org/grpc"
)

// recordingClient is the real client, keeping how many events each StreamEvents request carried.
type recordingClient struct {
	auditlogv1.AuditLogServiceClient
	mu    sync.Mutex
	sizes []int
}

type recordingStream struct {
	grpc.BidiStreamingClient[auditlogv1.StreamEventsRequest, auditlogv1.StreamEventsResponse]
	client *recordingClient
}

func (c *recordingClient) StreamEvents(ctx context.Context, opts ...grpc.CallOption) (grpc.BidiStreamingClient[auditlogv1.StreamEventsRequest, auditlogv1.StreamEventsResponse], error) {
	stream, err := c.AuditLogServiceClient.StreamEvents(ctx, opts...)
	return &recordingStream{stream, c}, err
}

func (s *recordingStream) Send(request *auditlogv1.StreamEventsRequest) error {
	n := len(request.GetEvents())
	if request.GetEvent() != nil {
		n = 1
	}
	s.client.mu.Lock()
	s.client.sizes = append(s.client.sizes, n)
	s.client.mu.Unlock()
	return s.BidiStreamingClient.Send(request)
}

func liveClient(t *testing.T) (*recordingClient, context.Context) {
	t.Helper()
	if os.Getenv("AUDITLOG_ADDR") == "" {
		t.Skip("AUDITLOG_ADDR is not set: no live auditlog server to test against")
	}
	conn, err := auditlog.NewConnFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return &recordingClient{AuditLogServiceClient: auditlogv1.NewAuditLogServiceClient(conn)}, ctx
}

func startCall(tenant string, n int) *auditlogv1.AuditEvent {
	return &auditlogv1.AuditEvent{TenantId: tenant, TenantUserId: "agent-7", Payload: &auditlogv1.AuditEvent_StartCall{
		StartCall: &auditlogv1.StartCallAttributes{CallId: "call-" + string(rune('a'+n%26)), CustomerId: "customer-42"},
	}}
}

func sessionClick(tenant, session string) *auditlogv1.AuditEvent {
	return &auditlogv1.AuditEvent{
		TenantId: tenant,
		Cobrowse: &auditlogv1.CobrowseContext{SessionId: session, Actor: auditlogv1.Actor_ACTOR_CUSTOMER},
		Payload:  &auditlogv1.AuditEvent_Click{Click: &auditlogv1.ClickAttributes{Element: &auditlogv1.Element{Id: "buy"}}},
	}
}

// drain returns every result of the stream, failing the test on an error other than io.EOF.
func drain(t *testing.T, stream *auditlog.EventStream) []*auditlogv1.StreamEventResult {
	t.Helper()
	var results []*auditlogv1.StreamEventResult
	for {
		result, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return results
		}
		if err != nil {
			t.Fatalf("Recv after %d results: %v", len(results), err)
		}
		results = append(results, result)
	}
}

func TestLiveStreamEventsSendsBatchesWithOneResultPerEvent(t *testing.T) {
	client, ctx := liveClient(t)
	tenant, session := "sdk-go-"+randomHex(t, 6), "session-"+randomHex(t, 6)
	// 2,500 events waiting at once: more than one request may carry.
	events := make([]*auditlogv1.AuditEvent, 2500)
	source := make(chan *auditlogv1.AuditEvent, len(events))
	for i := range events {
		events[i] = startCall(tenant, i)
		if i%10 == 0 {
			events[i] = sessionClick(tenant, session)
		}
		source <- events[i]
	}
	events[7].GetStartCall().CallId = "call\x07" // a control character: refused, alone
	close(source)

	stream, err := auditlog.StreamEvents(ctx, client, source, auditlog.StreamOptions{MaxBatch: 5000})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	results := drain(t, stream)

	if len(results) != len(events) {
		t.Fatalf("%d results for %d events", len(results), len(events))
	}
	var sequence int64
	for i, result := range results {
		if i == 7 {
			if result.GetError().GetReason() != auditlogv1.ErrorReason_ERROR_REASON_INVALID_ARGUMENT {
				t.Fatalf("result 7 = %v, want its INVALID_ARGUMENT", result)
			}
			continue
		}
		ack := result.GetAck()
		if ack == nil || ack.GetId() != events[i].GetId() || events[i].GetId() == "" {
			t.Fatalf("result %d = %v, want the ack of %s", i, result, events[i].GetId())
		}
		if events[i].GetCobrowse() != nil {
			// The session's clicks take sequences in the order they were given.
			if sequence++; ack.GetSequence() != sequence {
				t.Fatalf("click %d has sequence %d, want %d", i, ack.GetSequence(), sequence)
			}
		}
	}
	client.mu.Lock()
	defer client.mu.Unlock()
	total, largest := 0, 0
	for _, n := range client.sizes {
		total, largest = total+n, max(largest, n)
	}
	// Batches of what was waiting, within the contract's limit: the server refused none.
	if total != len(events) || largest != auditlog.MaxStreamBatch {
		t.Fatalf("request sizes %v", client.sizes)
	}
}

func TestLiveStreamEventsOneEventPerMessage(t *testing.T) {
	client, ctx := liveClient(t)
	tenant := "sdk-go-" + randomHex(t, 6)
	// An unbuffered channel, and each event sent only once the previous one is answered: a
	// stream that held a lone event back to fill a batch would never answer.
	source := make(chan *auditlogv1.AuditEvent)
	stream, err := auditlog.StreamEvents(ctx, client, source, auditlog.StreamOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer stream.Close()
	for i := range 3 {
		event := startCall(tenant, i)
		if i == 1 {
			event.TenantUserId = "" // a general event needs its acting user
		}
		source <- event
		result, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if wantError := i == 1; (result.GetError() != nil) != wantError || (!wantError && result.GetAck().GetId() != event.GetId()) {
			t.Fatalf("event %d: result %v", i, result)
		}
	}
	close(source)
	if rest := drain(t, stream); len(rest) != 0 {
		t.Fatalf("results after the last event: %v", rest)
	}
	client.mu.Lock()
	defer client.mu.Unlock()
	for _, n := range client.sizes {
		if n != 1 {
			t.Fatalf("request sizes %v, want one event each", client.sizes)
		}
	}
}
