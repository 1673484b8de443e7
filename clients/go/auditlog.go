// Package auditlog is the Go SDK of the auditlog service: small helpers over the generated stubs.
//
// The generated messages and the gRPC client live in the sub-package
// github.com/auditlog/auditlog/clients/go/auditlog/v1 (package auditlogv1); this package adds what
// the stubs cannot: client-chosen event ids and the EventType metadata read from the descriptors.
package auditlog

import (
	"crypto/rand"
	"encoding/binary"
	"fmt"
	"time"

	auditlogv1 "github.com/auditlog/auditlog/clients/go/auditlog/v1"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// NewEventID returns a new UUIDv7 (time-ordered, random tail) to use as AuditEvent.id, so that a
// retried LogEvent stores the event once.
func NewEventID() string {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		panic(fmt.Sprintf("auditlog: crypto/rand failed: %v", err))
	}
	ms := uint64(time.Now().UnixMilli())
	var ts [8]byte
	binary.BigEndian.PutUint64(ts[:], ms)
	copy(b[0:6], ts[2:8])       // 48-bit Unix milliseconds
	b[6] = 0x70 | (b[6] & 0x0f) // version 7
	b[8] = 0x80 | (b[8] & 0x3f) // RFC 9562 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

// TypeInfo returns the auditlog.v1.event_type_info option of an EventType value: its seed type
// string (e.g. "START_CALL"), display name (e.g. "[Call] Start") and category. It returns nil for
// EVENT_TYPE_UNSPECIFIED and for numbers this SDK does not know.
func TypeInfo(t auditlogv1.EventType) *auditlogv1.EventTypeInfo {
	value := t.Descriptor().Values().ByNumber(protoreflect.EnumNumber(t))
	if value == nil {
		return nil
	}
	opts := value.Options()
	if opts == nil || !proto.HasExtension(opts, auditlogv1.E_EventTypeInfo) {
		return nil
	}
	return proto.GetExtension(opts, auditlogv1.E_EventTypeInfo).(*auditlogv1.EventTypeInfo)
}
