// Command e2e-go logs the general events of the cross-language end-to-end test (spec: ../README.md)
// against AUDITLOG_ADDR (with AUDITLOG_TOKEN and AUDITLOG_TLS_* when set): the first half one by one
// with LogEvent, the rest in one LogEvents batch. It exits non-zero on any failure.
package main

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"time"

	auditlog "github.com/auditlog/auditlog/clients/go"
	auditlogv1 "github.com/auditlog/auditlog/clients/go/auditlog/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

type spec struct {
	tenant, session string
	baseMs          int64
}

func ms(x int64) *timestamppb.Timestamp { return timestamppb.New(time.UnixMilli(x)) }

func mustStruct(m map[string]any) *structpb.Struct {
	s, err := structpb.NewStruct(m)
	if err != nil {
		panic(err)
	}
	return s
}

// generalEvent is general event i (1-based) of the spec, and the type the server must derive.
func (s spec) generalEvent(i int) (*auditlogv1.AuditEvent, auditlogv1.EventType) {
	n := int64(i)
	e := &auditlogv1.AuditEvent{
		Id:           fmt.Sprintf("go-%04d", i),
		TenantId:     s.tenant,
		TenantUserId: fmt.Sprintf("agent-%d", i%5),
		OccurTime:    ms(s.baseMs + 1000*n + n),
	}
	customer := fmt.Sprintf("cust-%d", i%7)
	call := fmt.Sprintf("call-%d", i)
	role := fmt.Sprintf("role-%d", i%3)
	var t auditlogv1.EventType
	switch (i - 1) % 14 {
	case 0:
		t = auditlogv1.EventType_EVENT_TYPE_START_CALL
		e.Payload = &auditlogv1.AuditEvent_StartCall{StartCall: &auditlogv1.StartCallAttributes{CallId: call, CustomerId: customer}}
	case 1:
		t = auditlogv1.EventType_EVENT_TYPE_MESSENGER_SEND
		e.Payload = &auditlogv1.AuditEvent_MessengerSend{MessengerSend: &auditlogv1.MessengerSendAttributes{CustomerId: customer}}
	case 2:
		t = auditlogv1.EventType_EVENT_TYPE_LIVE_VIEW
		e.Payload = &auditlogv1.AuditEvent_LiveView{LiveView: &auditlogv1.LiveViewAttributes{CobrowseSessionId: s.session}}
	case 3:
		t = auditlogv1.EventType_EVENT_TYPE_LOGGED_IN
		e.Payload = &auditlogv1.AuditEvent_LoggedIn{LoggedIn: &auditlogv1.LoggedInAttributes{}}
	case 4:
		t = auditlogv1.EventType_EVENT_TYPE_ONLINE_STATUS_ONLINE
		e.Payload = &auditlogv1.AuditEvent_OnlineStatusOnline{OnlineStatusOnline: &auditlogv1.OnlineStatusOnlineAttributes{}}
	case 5:
		t = auditlogv1.EventType_EVENT_TYPE_ONLINE_STATUS_OFFLINE
		e.Payload = &auditlogv1.AuditEvent_OnlineStatusOffline{OnlineStatusOffline: &auditlogv1.OnlineStatusOfflineAttributes{}}
	case 6:
		t = auditlogv1.EventType_EVENT_TYPE_STATUS_CHANGE
		previous := "Unresolved"
		if i%2 == 0 {
			previous = ""
		}
		e.Payload = &auditlogv1.AuditEvent_StatusChange{StatusChange: &auditlogv1.StatusChangeAttributes{
			CustomerId: customer, PreviousStatus: previous, Status: "Done ✓", MessageId: fmt.Sprintf("msg-%d", i),
		}}
	case 7:
		t = auditlogv1.EventType_EVENT_TYPE_ROLE_CHANGE
		e.Payload = &auditlogv1.AuditEvent_RoleChange{RoleChange: &auditlogv1.RoleChangeAttributes{
			RoleName: role, AffectedTenantUserId: fmt.Sprintf("user-%d", i),
		}}
	case 8:
		t = auditlogv1.EventType_EVENT_TYPE_PERMISSION_CHANGE
		var permissions []string
		for p := 1; p <= i%4+1; p++ {
			permissions = append(permissions, fmt.Sprintf("perm-%d", p))
		}
		e.Payload = &auditlogv1.AuditEvent_PermissionChange{PermissionChange: &auditlogv1.PermissionChangeAttributes{
			RoleName: role, Permissions: permissions,
		}}
	case 9:
		t = auditlogv1.EventType_EVENT_TYPE_PLUGIN_CHANGE
		e.Payload = &auditlogv1.AuditEvent_PluginChange{PluginChange: &auditlogv1.PluginChangeAttributes{
			Plugin: fmt.Sprintf("plugin-%d", i),
			Configuration: mustStruct(map[string]any{
				"enabled": i%2 == 1, "level": i, "name": fmt.Sprintf("p-%d", i),
			}),
		}}
	case 10:
		t = auditlogv1.EventType_EVENT_TYPE_SETTINGS_CHANGE
		e.Payload = &auditlogv1.AuditEvent_SettingsChange{SettingsChange: &auditlogv1.SettingsChangeAttributes{
			Section: "widget",
			Configuration: mustStruct(map[string]any{
				"color": fmt.Sprintf("c-%d", i), "size": 1.5 * float64(i), "tags": []any{"a", "b"},
				"nested": map[string]any{"k": i},
			}),
		}}
	case 11:
		t = auditlogv1.EventType_EVENT_TYPE_MEETING_CHANGE
		action := auditlogv1.MeetingAction_MEETING_ACTION_CREATE_OR_UPDATE
		if i%2 == 0 {
			action = auditlogv1.MeetingAction_MEETING_ACTION_DELETE
		}
		start := s.baseMs + 3_600_000*n
		e.Payload = &auditlogv1.AuditEvent_MeetingChange{MeetingChange: &auditlogv1.MeetingChangeAttributes{
			Action: action,
			Conference: &auditlogv1.Conference{
				Id: fmt.Sprintf("conf-%d", i), Title: fmt.Sprintf("Meeting %d", i),
				StartTime: ms(start), EndTime: ms(start + 1_800_000),
				Extra: mustStruct(map[string]any{"room": fmt.Sprintf("r-%d", i)}),
			},
		}}
	case 12:
		t = auditlogv1.EventType_EVENT_TYPE_CONFERENCE_AGENT
		e.Payload = &auditlogv1.AuditEvent_ConferenceAgent{ConferenceAgent: &auditlogv1.ConferenceAgentAttributes{
			CallId: call, CustomerId: customer,
		}}
	case 13:
		t = auditlogv1.EventType_EVENT_TYPE_CONFERENCE_RECORDING
		e.Payload = &auditlogv1.AuditEvent_ConferenceRecording{ConferenceRecording: &auditlogv1.ConferenceRecordingAttributes{
			CallId: call, CustomerId: customer,
			JoinedAgentIds: []string{"agent-1", "agent-2"}, Tags: []string{fmt.Sprintf("t-%d", i)},
		}}
	}
	return e, t
}

// checkStored compares the event the server returned with the one sent: equal apart from the
// output-only fields, which must be the derived type, sequence 0 and a receive time.
func checkStored(sent, got *auditlogv1.AuditEvent, want auditlogv1.EventType) error {
	if got.GetEventType() != want || got.GetSequence() != 0 || got.GetReceiveTime() == nil {
		return fmt.Errorf("%s: stored with type %v, sequence %d, receive_time %v; want %v, 0, set",
			sent.GetId(), got.GetEventType(), got.GetSequence(), got.GetReceiveTime(), want)
	}
	g := proto.Clone(got).(*auditlogv1.AuditEvent)
	g.EventType, g.Sequence, g.ReceiveTime = 0, 0, nil
	if !proto.Equal(g, sent) {
		return fmt.Errorf("%s: stored\n  %v\nsent\n  %v", sent.GetId(), got, sent)
	}
	return nil
}

func envInt(name string) (int64, error) {
	v, err := strconv.ParseInt(os.Getenv(name), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	return v, nil
}

func run() error {
	addr, tenant, session := os.Getenv("AUDITLOG_ADDR"), os.Getenv("E2E_TENANT"), os.Getenv("E2E_SESSION")
	if addr == "" || tenant == "" || session == "" {
		return fmt.Errorf("AUDITLOG_ADDR, E2E_TENANT and E2E_SESSION must be set")
	}
	base, err := envInt("E2E_BASE_MS")
	if err != nil {
		return err
	}
	count, err := envInt("E2E_GENERAL_EVENTS")
	if err != nil {
		return err
	}
	s := spec{tenant: tenant, session: session, baseMs: base}

	// The SDK's helper reads AUDITLOG_ADDR, AUDITLOG_TOKEN and AUDITLOG_TLS_*, as every SDK does.
	conn, err := auditlog.NewConnFromEnv()
	if err != nil {
		return err
	}
	defer conn.Close()
	client := auditlogv1.NewAuditLogServiceClient(conn)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()

	n := int(count)
	single := n / 2
	for i := 1; i <= single; i++ {
		event, want := s.generalEvent(i)
		resp, err := client.LogEvent(ctx, &auditlogv1.LogEventRequest{Event: event})
		if err != nil {
			return fmt.Errorf("LogEvent(%s): %w", event.GetId(), err)
		}
		if resp.GetAlreadyStored() {
			return fmt.Errorf("LogEvent(%s): already_stored on the first attempt", event.GetId())
		}
		if err := checkStored(event, resp.GetEvent(), want); err != nil {
			return fmt.Errorf("LogEvent: %w", err)
		}
	}
	var batch []*auditlogv1.AuditEvent
	var types []auditlogv1.EventType
	for i := single + 1; i <= n; i++ {
		event, want := s.generalEvent(i)
		batch, types = append(batch, event), append(types, want)
	}
	if len(batch) > 0 {
		resp, err := client.LogEvents(ctx, &auditlogv1.LogEventsRequest{Events: batch})
		if err != nil {
			return fmt.Errorf("LogEvents: %w", err)
		}
		if len(resp.GetResults()) != len(batch) {
			return fmt.Errorf("LogEvents: %d results for %d events", len(resp.GetResults()), len(batch))
		}
		for k, result := range resp.GetResults() {
			if e := result.GetError(); e != nil {
				return fmt.Errorf("LogEvents: %s failed: %v", batch[k].GetId(), e)
			}
			if result.GetAlreadyStored() {
				return fmt.Errorf("LogEvents: %s already_stored on the first attempt", batch[k].GetId())
			}
			if err := checkStored(batch[k], result.GetEvent(), types[k]); err != nil {
				return fmt.Errorf("LogEvents: %w", err)
			}
		}
	}
	fmt.Printf("go: logged %d general events (%d with LogEvent, %d with LogEvents)\n", n, single, len(batch))
	return nil
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "go e2e writer:", err)
		os.Exit(1)
	}
}
