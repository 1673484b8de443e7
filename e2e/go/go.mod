// The Go writer of the cross-language end-to-end test (see ../README.md); uses the Go SDK from this checkout.
module github.com/auditlog/auditlog/e2e/go

go 1.26.0

require (
	github.com/auditlog/auditlog/clients/go v0.0.0
	google.golang.org/protobuf v1.36.12
)

require (
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/sys v0.48.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
	google.golang.org/grpc v1.85.0 // indirect
)

replace github.com/auditlog/auditlog/clients/go => ../../clients/go
