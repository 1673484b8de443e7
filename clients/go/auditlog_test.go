// Tests of the Go SDK: descriptor options offline, and a live round trip against AUDITLOG_ADDR (skipped when unset)
// with AUDITLOG_TOKEN and AUDITLOG_TLS_* applied by NewConnFromEnv.
package auditlog_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"regexp"
	"testing"
	"time"

	auditlog "github.com/auditlog/auditlog/clients/go"
	auditlogv1 "github.com/auditlog/auditlog/clients/go/auditlog/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func TestEventTypeInfo(t *testing.T) {
	info := auditlog.TypeInfo(auditlogv1.EventType_EVENT_TYPE_START_CALL)
	if info.GetTypeString() != "START_CALL" || info.GetDisplayName() != "[Call] Start" ||
		info.GetCategory() != auditlogv1.EventCategory_EVENT_CATEGORY_GENERAL {
		t.Fatalf("START_CALL info = %v", info)
	}
	click := auditlog.TypeInfo(auditlogv1.EventType_EVENT_TYPE_CLICK)
	if click.GetTypeString() != "CLICK" || click.GetCategory() != auditlogv1.EventCategory_EVENT_CATEGORY_COBROWSE {
		t.Fatalf("CLICK info = %v", click)
	}
	if auditlog.TypeInfo(auditlogv1.EventType_EVENT_TYPE_UNSPECIFIED) != nil {
		t.Fatal("EVENT_TYPE_UNSPECIFIED has no info")
	}
	// Every other value carries the option, with the enum name as its seed type string.
	values := auditlogv1.EventType(0).Descriptor().Values()
	for i := 1; i < values.Len(); i++ {
		v := values.Get(i)
		info := auditlog.TypeInfo(auditlogv1.EventType(v.Number()))
		if "EVENT_TYPE_"+info.GetTypeString() != string(v.Name()) || info.GetDisplayName() == "" {
			t.Errorf("%s: info = %v", v.Name(), info)
		}
	}
}

func TestNewEventID(t *testing.T) {
	re := regexp.MustCompile(`^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`)
	a, b := auditlog.NewEventID(), auditlog.NewEventID()
	if !re.MatchString(a) || a == b {
		t.Fatalf("ids %q %q", a, b)
	}
}

func TestLiveRoundTrip(t *testing.T) {
	if os.Getenv("AUDITLOG_ADDR") == "" {
		t.Skip("AUDITLOG_ADDR is not set: no live auditlog server to test against")
	}
	// AUDITLOG_TOKEN and AUDITLOG_TLS_* (when set) reach the server through the SDK's own helper.
	conn, err := auditlog.NewConnFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	client := auditlogv1.NewAuditLogServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tenant := "sdk-go-" + randomHex(t, 6)
	session := "session-" + randomHex(t, 6)
	// Millisecond times survive any storage (BSON dates are milliseconds), so they compare exactly.
	base := time.Now().UTC().Truncate(time.Millisecond)

	general := &auditlogv1.AuditEvent{
		Id: auditlog.NewEventID(), TenantId: tenant, TenantUserId: "agent-7",
		OccurTime: timestamppb.New(base),
		Payload: &auditlogv1.AuditEvent_StartCall{StartCall: &auditlogv1.StartCallAttributes{
			CallId: "call-1", CustomerId: "customer-42",
		}},
	}
	logged, err := client.LogEvent(ctx, &auditlogv1.LogEventRequest{Event: general})
	if err != nil {
		t.Fatalf("LogEvent(START_CALL): %v", err)
	}
	g := logged.GetEvent()
	if logged.GetAlreadyStored() || g.GetId() != general.GetId() || g.GetTenantId() != tenant ||
		g.GetEventType() != auditlogv1.EventType_EVENT_TYPE_START_CALL || g.GetReceiveTime() == nil ||
		g.GetSequence() != 0 || !g.GetOccurTime().AsTime().Equal(base) ||
		!proto.Equal(g.GetStartCall(), general.GetStartCall()) {
		t.Fatalf("LogEvent(START_CALL) returned %v", logged)
	}
	// The same id and content again is an idempotent retry.
	again, err := client.LogEvent(ctx, &auditlogv1.LogEventRequest{Event: general})
	if err != nil || !again.GetAlreadyStored() || again.GetEvent().GetId() != general.GetId() {
		t.Fatalf("retry: %v, %v", again, err)
	}

	cobrowse := &auditlogv1.AuditEvent{
		Id: auditlog.NewEventID(), TenantId: tenant,
		OccurTime: timestamppb.New(base.Add(time.Second)),
		Cobrowse:  &auditlogv1.CobrowseContext{SessionId: session, Actor: auditlogv1.Actor_ACTOR_CUSTOMER},
		Payload: &auditlogv1.AuditEvent_Click{Click: &auditlogv1.ClickAttributes{
			Element: &auditlogv1.Element{Name: "Buy now", Id: "buy-button"},
		}},
	}
	loggedClick, err := client.LogEvent(ctx, &auditlogv1.LogEventRequest{Event: cobrowse})
	if err != nil {
		t.Fatalf("LogEvent(CLICK): %v", err)
	}
	c := loggedClick.GetEvent()
	if c.GetEventType() != auditlogv1.EventType_EVENT_TYPE_CLICK || c.GetSequence() != 1 ||
		c.GetCobrowse().GetSessionId() != session || c.GetCobrowse().GetActor() != auditlogv1.Actor_ACTOR_CUSTOMER ||
		!proto.Equal(c.GetClick(), cobrowse.GetClick()) {
		t.Fatalf("LogEvent(CLICK) returned %v", loggedClick)
	}

	// GetEvent returns each as stored.
	for _, want := range []*auditlogv1.AuditEvent{g, c} {
		got, err := client.GetEvent(ctx, &auditlogv1.GetEventRequest{TenantId: tenant, Id: want.GetId()})
		if err != nil {
			t.Fatalf("GetEvent(%s): %v", want.GetId(), err)
		}
		assertSameEvent(t, got.GetEvent(), want)
	}

	// ListEvents: oldest first, one per page, then the session filter.
	var listed []*auditlogv1.AuditEvent
	req := &auditlogv1.ListEventsRequest{TenantId: tenant, Order: auditlogv1.SortOrder_SORT_ORDER_OLDEST_FIRST, PageSize: 1}
	for pages := 0; ; pages++ {
		if pages > 3 {
			t.Fatal("ListEvents: too many pages")
		}
		page, err := client.ListEvents(ctx, req)
		if err != nil {
			t.Fatalf("ListEvents: %v", err)
		}
		listed = append(listed, page.GetEvents()...)
		if page.GetNextPageToken() == "" {
			break
		}
		req.PageToken = page.GetNextPageToken()
	}
	if len(listed) != 2 {
		t.Fatalf("ListEvents returned %d events, want 2", len(listed))
	}
	assertSameEvent(t, listed[0], g)
	assertSameEvent(t, listed[1], c)
	bySession, err := client.ListEvents(ctx, &auditlogv1.ListEventsRequest{
		TenantId: tenant, Filter: &auditlogv1.EventFilter{CobrowseSessionId: session},
	})
	if err != nil {
		t.Fatalf("ListEvents(session): %v", err)
	}
	if len(bySession.GetEvents()) != 1 || bySession.GetNextPageToken() != "" {
		t.Fatalf("ListEvents(session) = %v", bySession)
	}
	assertSameEvent(t, bySession.GetEvents()[0], c)

	// TailSession replays the session from its start, then says it caught up.
	tailCtx, stopTail := context.WithTimeout(ctx, 15*time.Second)
	defer stopTail()
	stream, err := client.TailSession(tailCtx, &auditlogv1.TailSessionRequest{
		TenantId: tenant, SessionId: session,
		Start: &auditlogv1.TailSessionRequest_FromBeginning{FromBeginning: true},
	})
	if err != nil {
		t.Fatalf("TailSession: %v", err)
	}
	var tailed []*auditlogv1.AuditEvent
	for {
		msg, err := stream.Recv()
		if err != nil {
			t.Fatalf("TailSession.Recv: %v (after %d events)", err, len(tailed))
		}
		if msg.GetCursor() == "" {
			t.Fatalf("tail message without cursor: %v", msg)
		}
		if batch := msg.GetEvents(); batch != nil {
			tailed = append(tailed, batch.GetEvents()...)
		}
		if up := msg.GetCaughtUp(); up != nil {
			if up.GetHeadSequence() != 1 {
				t.Fatalf("caught_up.head_sequence = %d, want 1", up.GetHeadSequence())
			}
			break
		}
	}
	stopTail()
	if len(tailed) != 1 {
		t.Fatalf("tail replayed %d events, want 1", len(tailed))
	}
	assertSameEvent(t, tailed[0], c)

	// The resuming tail helper sees the same replay.
	helperCtx, stopHelper := context.WithTimeout(ctx, 15*time.Second)
	defer stopHelper()
	tail := auditlog.TailSession(helperCtx, client, &auditlogv1.TailSessionRequest{
		TenantId: tenant, SessionId: session,
		Start: &auditlogv1.TailSessionRequest_FromBeginning{FromBeginning: true},
	}, auditlog.TailOptions{})
	defer tail.Close()
	var viaHelper []*auditlogv1.AuditEvent
	for {
		msg, err := tail.Recv()
		if err != nil {
			t.Fatalf("SessionTail.Recv: %v (after %d events)", err, len(viaHelper))
		}
		viaHelper = append(viaHelper, msg.GetEvents().GetEvents()...)
		if msg.GetCaughtUp() != nil {
			break
		}
	}
	if len(viaHelper) != 1 || tail.Cursor() == "" {
		t.Fatalf("SessionTail replayed %d events, cursor %q", len(viaHelper), tail.Cursor())
	}
	assertSameEvent(t, viaHelper[0], c)
}

// assertSameEvent compares the fields a client sets or reads; receive_time only for presence, so
// the test does not depend on the precision at which the server stores it.
func assertSameEvent(t *testing.T, got, want *auditlogv1.AuditEvent) {
	t.Helper()
	a, b := proto.Clone(got).(*auditlogv1.AuditEvent), proto.Clone(want).(*auditlogv1.AuditEvent)
	if a.GetReceiveTime() == nil {
		t.Fatalf("event %s has no receive_time", a.GetId())
	}
	a.ReceiveTime, b.ReceiveTime = nil, nil
	// The ledger's place is filled in once the event is sequenced: a read may have it, the
	// answer to LogEvent never does.
	for _, e := range []*auditlogv1.AuditEvent{a, b} {
		e.LedgerSequence, e.LedgerHash = 0, nil
	}
	if !proto.Equal(a, b) {
		t.Fatalf("event differs:\n got  %v\n want %v", got, want)
	}
}

func randomHex(t *testing.T, n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}
