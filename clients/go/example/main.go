// Example program for the Go SDK: logs a general and a co-browsing event, reads them back, tails the session.
//
// Run with a server listening on AUDITLOG_ADDR (default 127.0.0.1:50051):
//
//	go run ./example
//
// AUDITLOG_TOKEN (a bearer token) and AUDITLOG_TLS_CA / AUDITLOG_TLS_CERT / AUDITLOG_TLS_KEY (TLS,
// mTLS) apply when set.
package main

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log"
	"time"

	auditlog "github.com/auditlog/auditlog/clients/go"
	auditlogv1 "github.com/auditlog/auditlog/clients/go/auditlog/v1"
	"google.golang.org/protobuf/types/known/timestamppb"
)

func main() {
	conn, err := auditlog.NewConnFromEnv()
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	defer conn.Close()
	client := auditlogv1.NewAuditLogServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	tenant := "example-go-" + randomHex(4)
	session := "session-" + randomHex(4)

	// A general event: the acting tenant user plus a typed payload.
	call, err := client.LogEvent(ctx, &auditlogv1.LogEventRequest{Event: &auditlogv1.AuditEvent{
		Id:           auditlog.NewEventID(),
		TenantId:     tenant,
		TenantUserId: "agent-7",
		OccurTime:    timestamppb.Now(),
		Payload: &auditlogv1.AuditEvent_StartCall{StartCall: &auditlogv1.StartCallAttributes{
			CallId: "call-1", CustomerId: "customer-42",
		}},
	}})
	if err != nil {
		log.Fatalf("LogEvent(START_CALL): %v", err)
	}
	fmt.Printf("logged %s id=%s received=%s\n", call.GetEvent().GetEventType(), call.GetEvent().GetId(),
		call.GetEvent().GetReceiveTime().AsTime().Format(time.RFC3339Nano))

	// A co-browsing event: the session context instead of (or besides) a tenant user.
	click, err := client.LogEvent(ctx, &auditlogv1.LogEventRequest{Event: &auditlogv1.AuditEvent{
		Id:        auditlog.NewEventID(),
		TenantId:  tenant,
		OccurTime: timestamppb.Now(),
		Cobrowse: &auditlogv1.CobrowseContext{
			SessionId: session, Actor: auditlogv1.Actor_ACTOR_CUSTOMER,
		},
		Payload: &auditlogv1.AuditEvent_Click{Click: &auditlogv1.ClickAttributes{
			Element: &auditlogv1.Element{Name: "Buy now", Id: "buy-button"},
		}},
	}})
	if err != nil {
		log.Fatalf("LogEvent(CLICK): %v", err)
	}
	fmt.Printf("logged %s id=%s sequence=%d\n", click.GetEvent().GetEventType(), click.GetEvent().GetId(),
		click.GetEvent().GetSequence())

	// Read one back by id.
	got, err := client.GetEvent(ctx, &auditlogv1.GetEventRequest{TenantId: tenant, Id: call.GetEvent().GetId()})
	if err != nil {
		log.Fatalf("GetEvent: %v", err)
	}
	fmt.Printf("got %s call_id=%s customer_id=%s\n", got.GetEvent().GetEventType(),
		got.GetEvent().GetStartCall().GetCallId(), got.GetEvent().GetStartCall().GetCustomerId())

	// List the tenant's events, oldest first, following the page tokens.
	req := &auditlogv1.ListEventsRequest{TenantId: tenant, Order: auditlogv1.SortOrder_SORT_ORDER_OLDEST_FIRST, PageSize: 50}
	for {
		page, err := client.ListEvents(ctx, req)
		if err != nil {
			log.Fatalf("ListEvents: %v", err)
		}
		for _, e := range page.GetEvents() {
			fmt.Printf("listed %s id=%s\n", e.GetEventType(), e.GetId())
		}
		if page.GetNextPageToken() == "" {
			break
		}
		req.PageToken = page.GetNextPageToken()
	}

	// Tail the session from its first event until replay has caught up with the live head. The
	// SDK's tail resumes by itself from the last cursor if the call breaks (server restart, rate
	// limit, expired token), so a console can follow a session for hours.
	tailCtx, stopTail := context.WithCancel(ctx)
	defer stopTail()
	tail := auditlog.TailSession(tailCtx, client, &auditlogv1.TailSessionRequest{
		TenantId: tenant, SessionId: session,
		Start: &auditlogv1.TailSessionRequest_FromBeginning{FromBeginning: true},
	}, auditlog.TailOptions{OnRetry: func(err error, wait time.Duration) {
		log.Printf("tail: resuming in %s after %v", wait, err)
	}})
	for caughtUp := false; !caughtUp; {
		msg, err := tail.Recv()
		if errors.Is(err, io.EOF) {
			log.Fatal("TailSession ended before caught_up")
		} else if err != nil {
			log.Fatalf("TailSession: %v", err)
		}
		switch kind := msg.GetKind().(type) {
		case *auditlogv1.TailSessionResponse_Events:
			for _, e := range kind.Events.GetEvents() {
				fmt.Printf("tail: #%d %s element=%q\n", e.GetSequence(), e.GetEventType(), e.GetClick().GetElement().GetId())
			}
		case *auditlogv1.TailSessionResponse_CaughtUp:
			fmt.Printf("tail: caught up at head %d (cursor %s)\n", kind.CaughtUp.GetHeadSequence(), msg.GetCursor())
			caughtUp = true
		case *auditlogv1.TailSessionResponse_Heartbeat:
			fmt.Printf("tail: heartbeat at head %d\n", kind.Heartbeat.GetHeadSequence())
		}
	}
	tail.Close()

	// The seed type string and display name are options on the enum value, readable offline.
	info := auditlog.TypeInfo(auditlogv1.EventType_EVENT_TYPE_START_CALL)
	fmt.Printf("EVENT_TYPE_START_CALL: type_string=%q display_name=%q category=%s\n",
		info.GetTypeString(), info.GetDisplayName(), info.GetCategory())
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		log.Fatal(err)
	}
	return hex.EncodeToString(b)
}
