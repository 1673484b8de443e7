// Offline tests of bearer tokens, TLS/mTLS, the AUDITLOG_* environment, RetryInfo and the resuming
// tail, each against a stub AuditLogService served by the test on an ephemeral port.
package auditlog_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	auditlog "github.com/auditlog/auditlog/clients/go"
	auditlogv1 "github.com/auditlog/auditlog/clients/go/auditlog/v1"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"
)

// stubServer records what each call carried; tail, when set, serves TailSession.
type stubServer struct {
	auditlogv1.UnimplementedAuditLogServiceServer
	mu          sync.Mutex
	auth        []string // the authorization metadata of each call
	clientNames []string // the subject CN of the verified client certificate of each call, if any
	tail        func(call int, req *auditlogv1.TailSessionRequest, stream grpc.ServerStreamingServer[auditlogv1.TailSessionResponse]) error
	tailCalls   int
}

func (s *stubServer) record(ctx context.Context) {
	md, _ := metadata.FromIncomingContext(ctx)
	name := ""
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(credentials.TLSInfo); ok && len(info.State.VerifiedChains) > 0 {
			name = info.State.VerifiedChains[0][0].Subject.CommonName
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.auth = append(s.auth, strings.Join(md.Get("authorization"), ","))
	s.clientNames = append(s.clientNames, name)
}

func (s *stubServer) seen() (auth, clientNames []string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.auth), slices.Clone(s.clientNames)
}

func (s *stubServer) LogEvent(ctx context.Context, req *auditlogv1.LogEventRequest) (*auditlogv1.LogEventResponse, error) {
	s.record(ctx)
	return &auditlogv1.LogEventResponse{Event: req.GetEvent()}, nil
}

func (s *stubServer) TailSession(req *auditlogv1.TailSessionRequest, stream grpc.ServerStreamingServer[auditlogv1.TailSessionResponse]) error {
	s.record(stream.Context())
	s.mu.Lock()
	s.tailCalls++
	call := s.tailCalls
	s.mu.Unlock()
	return s.tail(call, req, stream)
}

// serve starts srv on an ephemeral loopback port and returns its address.
func serve(t *testing.T, srv *stubServer, opts ...grpc.ServerOption) string {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := grpc.NewServer(opts...)
	auditlogv1.RegisterAuditLogServiceServer(s, srv)
	go func() { _ = s.Serve(lis) }()
	t.Cleanup(s.Stop)
	return lis.Addr().String()
}

// pki is a throwaway CA with a server certificate for localhost/127.0.0.1 and a client
// certificate, written as PEM files into a test directory.
type pki struct {
	dir                                string
	caFile, serverCert, serverKey      string
	clientCert, clientKey, otherCAFile string
	pool                               *x509.CertPool
	serverPair                         tls.Certificate
}

func newPKI(t *testing.T) *pki {
	t.Helper()
	p := &pki{dir: t.TempDir()}
	caKey, caCert, caDER := issue(t, "auditlog test CA", nil, nil, nil)
	p.caFile = writePEM(t, p.dir, "ca.pem", "CERTIFICATE", caDER)
	p.pool = x509.NewCertPool()
	p.pool.AddCert(caCert)
	_, _, otherDER := issue(t, "another CA", nil, nil, nil)
	p.otherCAFile = writePEM(t, p.dir, "other-ca.pem", "CERTIFICATE", otherDER)

	serverKey, _, serverDER := issue(t, "auditlog test server", caCert, caKey, []string{"localhost"})
	p.serverCert = writePEM(t, p.dir, "server.pem", "CERTIFICATE", serverDER)
	p.serverKey = writeKey(t, p.dir, "server.key", serverKey)
	pair, err := tls.LoadX509KeyPair(p.serverCert, p.serverKey)
	if err != nil {
		t.Fatal(err)
	}
	p.serverPair = pair

	clientKey, _, clientDER := issue(t, "sdk-test-client", caCert, caKey, nil)
	p.clientCert = writePEM(t, p.dir, "client.pem", "CERTIFICATE", clientDER)
	p.clientKey = writeKey(t, p.dir, "client.key", clientKey)
	return p
}

// issue makes a key and a certificate for cn, self-signed (a CA) when parent is nil.
func issue(t *testing.T, cn string, parent *x509.Certificate, parentKey *ecdsa.PrivateKey, dnsNames []string) (*ecdsa.PrivateKey, *x509.Certificate, []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(24 * time.Hour),
	}
	signer := key
	if parent == nil {
		tmpl.IsCA, tmpl.BasicConstraintsValid = true, true
		tmpl.KeyUsage = x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature
		parent = tmpl
	} else {
		signer = parentKey
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		tmpl.DNSNames = dnsNames
		if dnsNames != nil {
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	return key, cert, der
}

func writePEM(t *testing.T, dir, name, kind string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func writeKey(t *testing.T, dir, name string, key *ecdsa.PrivateKey) string {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return writePEM(t, dir, name, "PRIVATE KEY", der)
}

// tlsServer returns the server option of a TLS server, requiring a client certificate when mutual.
func (p *pki) tlsServer(mutual bool) grpc.ServerOption {
	cfg := &tls.Config{Certificates: []tls.Certificate{p.serverPair}, MinVersion: tls.VersionTLS12}
	if mutual {
		cfg.ClientAuth, cfg.ClientCAs = tls.RequireAndVerifyClientCert, p.pool
	}
	return grpc.Creds(credentials.NewTLS(cfg))
}

func logOne(ctx context.Context, conn *grpc.ClientConn) error {
	_, err := auditlogv1.NewAuditLogServiceClient(conn).LogEvent(ctx, &auditlogv1.LogEventRequest{
		Event: &auditlogv1.AuditEvent{Id: auditlog.NewEventID(), TenantId: "acme"},
	})
	return err
}

func testContext(t *testing.T) context.Context {
	// A bound on a hung call, not a speed assertion.
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// countingTokens returns "token-1", "token-2", ... one per call, and how many it handed out.
func countingTokens() (auditlog.TokenSource, func() int) {
	var mu sync.Mutex
	n := 0
	return func(context.Context) (string, error) {
			mu.Lock()
			defer mu.Unlock()
			n++
			return fmt.Sprintf("token-%d", n), nil
		}, func() int {
			mu.Lock()
			defer mu.Unlock()
			return n
		}
}

func TestBearerTokenOnPlaintextAskedForEveryCall(t *testing.T) {
	srv := &stubServer{}
	addr := serve(t, srv)
	tokens, issued := countingTokens()
	conn, err := auditlog.NewConn(auditlog.Options{Addr: addr, Token: tokens})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := testContext(t)
	for range 3 {
		if err := logOne(ctx, conn); err != nil {
			t.Fatal(err)
		}
	}
	auth, _ := srv.seen()
	if want := []string{"Bearer token-1", "Bearer token-2", "Bearer token-3"}; !slices.Equal(auth, want) || issued() != 3 {
		t.Fatalf("authorization %q after %d tokens, want %q", auth, issued(), want)
	}
}

func TestNoTokenSendsNoAuthorization(t *testing.T) {
	srv := &stubServer{}
	conn, err := auditlog.NewConn(auditlog.Options{Addr: serve(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := logOne(testContext(t), conn); err != nil {
		t.Fatal(err)
	}
	if auth, _ := srv.seen(); !slices.Equal(auth, []string{""}) {
		t.Fatalf("authorization %q, want none", auth)
	}
}

func TestBearerTokenRequiringTLSRefusesPlaintext(t *testing.T) {
	srv := &stubServer{}
	conn, err := grpc.NewClient(serve(t, srv), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(auditlog.BearerToken(auditlog.StaticToken("secret"), true)))
	if err == nil {
		defer conn.Close()
		err = logOne(testContext(t), conn)
	}
	if err == nil {
		t.Fatal("a token that requires TLS went out over plaintext")
	}
	if auth, _ := srv.seen(); len(auth) != 0 {
		t.Fatalf("server saw %q", auth)
	}
}

func TestFailingTokenSourceIsUnauthenticated(t *testing.T) {
	srv := &stubServer{}
	conn, err := auditlog.NewConn(auditlog.Options{Addr: serve(t, srv), Token: func(context.Context) (string, error) {
		return "", errors.New("identity provider down")
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	err = logOne(testContext(t), conn)
	if status.Code(err) != codes.Unauthenticated || !strings.Contains(err.Error(), "identity provider down") {
		t.Fatalf("err = %v, want UNAUTHENTICATED naming the cause", err)
	}
}

func TestTLS(t *testing.T) {
	p := newPKI(t)
	srv := &stubServer{}
	addr := serve(t, srv, p.tlsServer(false))
	ctx := testContext(t)

	conn, err := auditlog.NewConn(auditlog.Options{Addr: addr, Token: auditlog.StaticToken("tls-token"), TLS: &auditlog.TLSConfig{CAFile: p.caFile}})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := logOne(ctx, conn); err != nil {
		t.Fatalf("TLS with the right CA: %v", err)
	}
	// The certificate names localhost and 127.0.0.1: an override must be verified too.
	named, err := auditlog.NewConn(auditlog.Options{Addr: addr, TLS: &auditlog.TLSConfig{CAFile: p.caFile, ServerName: "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	defer named.Close()
	if err := logOne(ctx, named); err != nil {
		t.Fatalf("TLS with server name localhost: %v", err)
	}
	if auth, _ := srv.seen(); !slices.Equal(auth, []string{"Bearer tls-token", ""}) {
		t.Fatalf("authorization %q", auth)
	}

	for name, o := range map[string]auditlog.Options{
		"plaintext":   {Addr: addr},
		"another CA":  {Addr: addr, TLS: &auditlog.TLSConfig{CAFile: p.otherCAFile}},
		"wrong name":  {Addr: addr, TLS: &auditlog.TLSConfig{CAFile: p.caFile, ServerName: "auditlog.invalid"}},
		"system root": {Addr: addr, TLS: &auditlog.TLSConfig{}},
	} {
		bad, err := auditlog.NewConn(o)
		if err != nil {
			t.Fatal(err)
		}
		shortCtx, cancel := context.WithTimeout(ctx, 5*time.Second)
		err = logOne(shortCtx, bad)
		cancel()
		bad.Close()
		if status.Code(err) != codes.Unavailable {
			t.Errorf("%s client: err = %v, want UNAVAILABLE (refused)", name, err)
		}
	}
	if auth, _ := srv.seen(); len(auth) != 2 {
		t.Fatalf("refused clients reached the service: %q", auth)
	}
}

func TestMutualTLSFromEnvironment(t *testing.T) {
	p := newPKI(t)
	srv := &stubServer{}
	addr := serve(t, srv, p.tlsServer(true))
	ctx := testContext(t)

	t.Setenv(auditlog.EnvAddr, addr)
	t.Setenv(auditlog.EnvToken, "env-token")
	t.Setenv(auditlog.EnvTLSCA, p.caFile)
	t.Setenv(auditlog.EnvTLSServerName, "")
	t.Setenv(auditlog.EnvTLSCert, "")
	t.Setenv(auditlog.EnvTLSKey, "")
	noCert, err := auditlog.NewConnFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	if err := logOne(ctx, noCert); err == nil {
		t.Fatal("a client without a certificate got through an mTLS server")
	}

	t.Setenv(auditlog.EnvTLSCert, p.clientCert)
	t.Setenv(auditlog.EnvTLSKey, p.clientKey)
	conn, err := auditlog.NewConnFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if err := logOne(ctx, conn); err != nil {
		t.Fatalf("mTLS: %v", err)
	}
	auth, names := srv.seen()
	if !slices.Equal(auth, []string{"Bearer env-token"}) || !slices.Equal(names, []string{"sdk-test-client"}) {
		t.Fatalf("authorization %q, client certificates %q", auth, names)
	}
}

func TestOptionsFromEnvironment(t *testing.T) {
	for _, name := range []string{auditlog.EnvAddr, auditlog.EnvToken, auditlog.EnvTLSCA, auditlog.EnvTLSCert, auditlog.EnvTLSKey, auditlog.EnvTLSServerName} {
		t.Setenv(name, "")
	}
	o, err := auditlog.OptionsFromEnv()
	if err != nil || o.Addr != "" || o.Token != nil || o.TLS != nil {
		t.Fatalf("empty environment: %+v, %v", o, err)
	}
	// A client certificate without a CA must not quietly become a plaintext connection.
	t.Setenv(auditlog.EnvTLSCert, "client.pem")
	t.Setenv(auditlog.EnvTLSKey, "client.key")
	if _, err := auditlog.OptionsFromEnv(); err == nil {
		t.Fatal("a client certificate without AUDITLOG_TLS_CA was accepted")
	}
	t.Setenv(auditlog.EnvTLSCA, "ca.pem")
	t.Setenv(auditlog.EnvTLSServerName, "auditlog.internal")
	o, err = auditlog.OptionsFromEnv()
	want := auditlog.TLSConfig{CAFile: "ca.pem", ServerName: "auditlog.internal", CertFile: "client.pem", KeyFile: "client.key"}
	if err != nil || o.TLS == nil || *o.TLS != want {
		t.Fatalf("TLS from env: %+v, %v", o.TLS, err)
	}
}

func retryInfoError(code codes.Code, delay time.Duration) error {
	st, err := status.New(code, "slow down").WithDetails(
		&errdetails.ErrorInfo{Reason: "RATE_LIMITED", Domain: "auditlog.v1"},
		&errdetails.RetryInfo{RetryDelay: durationpb.New(delay)},
	)
	if err != nil {
		panic(err)
	}
	return st.Err()
}

func TestRetryDelay(t *testing.T) {
	if d, ok := auditlog.RetryDelay(retryInfoError(codes.ResourceExhausted, 1500*time.Millisecond)); !ok || d != 1500*time.Millisecond {
		t.Fatalf("RetryDelay = %v, %v; want 1.5s", d, ok)
	}
	wrapped := fmt.Errorf("logging: %w", retryInfoError(codes.ResourceExhausted, 2*time.Second))
	if d, ok := auditlog.RetryDelay(wrapped); !ok || d != 2*time.Second {
		t.Fatalf("RetryDelay(wrapped) = %v, %v; want 2s", d, ok)
	}
	for _, err := range []error{nil, errors.New("plain"), status.Error(codes.ResourceExhausted, "no details")} {
		if d, ok := auditlog.RetryDelay(err); ok {
			t.Fatalf("RetryDelay(%v) = %v, want none", err, d)
		}
	}
}

// Received through a real call, the detail survives the wire.
func TestRetryDelayOverTheWire(t *testing.T) {
	srv := &stubServer{tail: func(int, *auditlogv1.TailSessionRequest, grpc.ServerStreamingServer[auditlogv1.TailSessionResponse]) error {
		return retryInfoError(codes.ResourceExhausted, 750*time.Millisecond)
	}}
	conn, err := auditlog.NewConn(auditlog.Options{Addr: serve(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	stream, err := auditlogv1.NewAuditLogServiceClient(conn).TailSession(testContext(t), &auditlogv1.TailSessionRequest{TenantId: "acme", SessionId: "s"})
	if err == nil {
		_, err = stream.Recv()
	}
	if d, ok := auditlog.RetryDelay(err); status.Code(err) != codes.ResourceExhausted || !ok || d != 750*time.Millisecond {
		t.Fatalf("err %v: RetryDelay = %v, %v", err, d, ok)
	}
}

func event(seq int64) *auditlogv1.AuditEvent {
	return &auditlogv1.AuditEvent{Id: fmt.Sprintf("e%d", seq), TenantId: "acme", Sequence: seq}
}

func sendEvents(stream grpc.ServerStreamingServer[auditlogv1.TailSessionResponse], seqs ...int64) error {
	for _, seq := range seqs {
		if err := stream.Send(&auditlogv1.TailSessionResponse{
			Cursor: fmt.Sprintf("c%d", seq),
			Kind:   &auditlogv1.TailSessionResponse_Events{Events: &auditlogv1.TailEventBatch{Events: []*auditlogv1.AuditEvent{event(seq)}}},
		}); err != nil {
			return err
		}
	}
	return nil
}

// tailAll runs a SessionTail to its end and returns the sequences it returned and its final error.
func tailAll(t *testing.T, conn *grpc.ClientConn, opts auditlog.TailOptions) ([]int64, *auditlog.SessionTail, error) {
	t.Helper()
	tail := auditlog.TailSession(testContext(t), auditlogv1.NewAuditLogServiceClient(conn), &auditlogv1.TailSessionRequest{
		TenantId: "acme", SessionId: "s", Start: &auditlogv1.TailSessionRequest_FromBeginning{FromBeginning: true},
	}, opts)
	defer tail.Close()
	var seqs []int64
	for {
		msg, err := tail.Recv()
		if err != nil {
			return seqs, tail, err
		}
		for _, e := range msg.GetEvents().GetEvents() {
			seqs = append(seqs, e.GetSequence())
		}
	}
}

func TestSessionTailWaitsTheRetryInfoDelay(t *testing.T) {
	var cursors []string
	srv := &stubServer{tail: func(call int, req *auditlogv1.TailSessionRequest, stream grpc.ServerStreamingServer[auditlogv1.TailSessionResponse]) error {
		cursors = append(cursors, req.GetCursor())
		switch call {
		case 1: // rate limited before the first message
			return retryInfoError(codes.ResourceExhausted, 30*time.Millisecond)
		case 2:
			if err := sendEvents(stream, 1, 2); err != nil {
				return err
			}
			stream.SetTrailer(metadata.Pairs(auditlog.CursorTrailer, "c2"))
			return retryInfoError(codes.ResourceExhausted, 20*time.Millisecond)
		default: // a replay overlapping what was already delivered, then the end
			return sendEvents(stream, 2, 3)
		}
	}}
	conn, err := auditlog.NewConn(auditlog.Options{Addr: serve(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var waits []time.Duration
	seqs, tail, err := tailAll(t, conn, auditlog.TailOptions{
		InitialBackoff: time.Hour, // the server's delay must be used, never the backoff
		OnRetry:        func(_ error, wait time.Duration) { waits = append(waits, wait) },
	})
	if !errors.Is(err, io.EOF) {
		t.Fatalf("tail ended with %v", err)
	}
	if !slices.Equal(seqs, []int64{1, 2, 3}) || !slices.Equal(waits, []time.Duration{30 * time.Millisecond, 20 * time.Millisecond}) ||
		!slices.Equal(cursors, []string{"", "", "c2"}) || tail.Resumes() != 2 || tail.Cursor() != "c3" {
		t.Fatalf("events %v, waits %v, cursors %q, resumes %d, cursor %q", seqs, waits, cursors, tail.Resumes(), tail.Cursor())
	}
}

func TestSessionTailGivesUpAfterMaxRetries(t *testing.T) {
	srv := &stubServer{tail: func(int, *auditlogv1.TailSessionRequest, grpc.ServerStreamingServer[auditlogv1.TailSessionResponse]) error {
		return retryInfoError(codes.ResourceExhausted, time.Millisecond)
	}}
	conn, err := auditlog.NewConn(auditlog.Options{Addr: serve(t, srv)})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, tail, err := tailAll(t, conn, auditlog.TailOptions{MaxRetries: 3})
	if status.Code(err) != codes.ResourceExhausted || tail.Resumes() != 3 || srv.tailCalls != 4 {
		t.Fatalf("err %v after %d resumes, %d calls", err, tail.Resumes(), srv.tailCalls)
	}
}

func TestSessionTailRenewsAnExpiredToken(t *testing.T) {
	var cursors []string
	srv := &stubServer{tail: func(call int, req *auditlogv1.TailSessionRequest, stream grpc.ServerStreamingServer[auditlogv1.TailSessionResponse]) error {
		cursors = append(cursors, req.GetCursor())
		md, _ := metadata.FromIncomingContext(stream.Context())
		if got := md.Get("authorization"); len(got) != 1 || got[0] != fmt.Sprintf("Bearer token-%d", call) {
			return status.Errorf(codes.Unauthenticated, "call %d: authorization %q", call, got)
		}
		switch call {
		case 1: // the token expires after one event
			if err := sendEvents(stream, 1); err != nil {
				return err
			}
			stream.SetTrailer(metadata.Pairs(auditlog.CursorTrailer, "c1"))
			return status.Error(codes.Unauthenticated, "token expired")
		default:
			return sendEvents(stream, 2)
		}
	}}
	tokens, issued := countingTokens()
	conn, err := auditlog.NewConn(auditlog.Options{Addr: serve(t, srv), Token: tokens})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var waits []time.Duration
	seqs, tail, err := tailAll(t, conn, auditlog.TailOptions{OnRetry: func(_ error, wait time.Duration) { waits = append(waits, wait) }})
	if !errors.Is(err, io.EOF) {
		t.Fatalf("tail ended with %v", err)
	}
	if !slices.Equal(seqs, []int64{1, 2}) || issued() != 2 || !slices.Equal(cursors, []string{"", "c1"}) ||
		!slices.Equal(waits, []time.Duration{0}) || tail.Resumes() != 1 {
		t.Fatalf("events %v, tokens %d, cursors %q, waits %v, resumes %d", seqs, issued(), cursors, waits, tail.Resumes())
	}
}

func TestSessionTailReportsARejectedToken(t *testing.T) {
	srv := &stubServer{tail: func(call int, _ *auditlogv1.TailSessionRequest, stream grpc.ServerStreamingServer[auditlogv1.TailSessionResponse]) error {
		if call == 1 {
			if err := sendEvents(stream, 1); err != nil {
				return err
			}
			stream.SetTrailer(metadata.Pairs(auditlog.CursorTrailer, "c1"))
			return status.Error(codes.Unauthenticated, "token expired")
		}
		// The renewed token is refused at once: no cursor, nothing to resume.
		return status.Error(codes.Unauthenticated, "bad token")
	}}
	tokens, issued := countingTokens()
	conn, err := auditlog.NewConn(auditlog.Options{Addr: serve(t, srv), Token: tokens})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	seqs, tail, err := tailAll(t, conn, auditlog.TailOptions{})
	if status.Code(err) != codes.Unauthenticated || !slices.Equal(seqs, []int64{1}) || issued() != 2 || tail.Resumes() != 1 {
		t.Fatalf("err %v, events %v, tokens %d, resumes %d", err, seqs, issued(), tail.Resumes())
	}
}
