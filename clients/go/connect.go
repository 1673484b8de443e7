// Connections of the Go SDK: bearer tokens as per-RPC credentials, TLS/mTLS transport credentials,
// and one constructor that builds a ready connection from the AUDITLOG_* environment variables.
package auditlog

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
)

// DefaultAddress is the server address used when AUDITLOG_ADDR is unset, as in every auditlog SDK.
const DefaultAddress = "127.0.0.1:50051"

// The environment variables every example, live test and end-to-end program reads.
const (
	EnvAddr          = "AUDITLOG_ADDR"            // host:port
	EnvToken         = "AUDITLOG_TOKEN"           // bearer token to send, when set
	EnvTLSCA         = "AUDITLOG_TLS_CA"          // CA PEM file: use TLS when set
	EnvTLSCert       = "AUDITLOG_TLS_CERT"        // client certificate PEM (mTLS), with EnvTLSKey
	EnvTLSKey        = "AUDITLOG_TLS_KEY"         // client private key PEM (mTLS), with EnvTLSCert
	EnvTLSServerName = "AUDITLOG_TLS_SERVER_NAME" // name to verify in the server certificate, when it differs from the host
)

// TokenSource returns the bearer token for one call. It is called for every RPC (and for every
// resume of a SessionTail), so a source that caches a token and renews it before it expires keeps
// long-lived clients authenticated; keep it cheap, it runs on the call path.
type TokenSource func(ctx context.Context) (string, error)

// StaticToken returns a TokenSource that always returns token.
func StaticToken(token string) TokenSource {
	return func(context.Context) (string, error) { return token, nil }
}

type bearerToken struct {
	source     TokenSource
	requireTLS bool
}

func (b bearerToken) GetRequestMetadata(ctx context.Context, _ ...string) (map[string]string, error) {
	token, err := b.source(ctx)
	if err == nil && token == "" {
		err = errors.New("empty token")
	}
	if err != nil {
		// UNAUTHENTICATED rather than grpc's default for call credentials (INTERNAL), so that callers
		// and SessionTail treat it as the auth failure it is instead of retrying it.
		return nil, status.Errorf(codes.Unauthenticated, "auditlog: token source: %v", err)
	}
	return map[string]string{"authorization": "Bearer " + token}, nil
}

func (b bearerToken) RequireTransportSecurity() bool { return b.requireTLS }

// BearerToken returns per-RPC credentials that send "authorization: Bearer <token>" with the token
// from source on every call. Use them with grpc.WithPerRPCCredentials (every call of a connection)
// or grpc.PerRPCCredentials (one call).
//
// With requireTLS, grpc refuses to send them over a connection without TLS, which is what a
// production client wants: a bearer token in plaintext can be replayed by anyone on the path. Pass
// false only for a plaintext connection to a local development server.
func BearerToken(source TokenSource, requireTLS bool) credentials.PerRPCCredentials {
	return bearerToken{source: source, requireTLS: requireTLS}
}

// TLSConfig says how to verify the server and, for mTLS, which certificate to present.
type TLSConfig struct {
	// CAFile is a PEM file of the certificates that may sign the server's certificate; empty means
	// the system roots.
	CAFile string
	// ServerName overrides the name verified in the server certificate (and sent as SNI); empty
	// means the host of the address.
	ServerName string
	// CertFile and KeyFile are the PEM client certificate and private key for mTLS; both or neither.
	CertFile, KeyFile string
}

// TLSCredentials returns transport credentials for grpc.WithTransportCredentials from cfg.
func TLSCredentials(cfg TLSConfig) (credentials.TransportCredentials, error) {
	tc := &tls.Config{ServerName: cfg.ServerName, MinVersion: tls.VersionTLS12}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("auditlog: TLS CA: %w", err)
		}
		roots := x509.NewCertPool()
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("auditlog: TLS CA: no PEM certificate in %s", cfg.CAFile)
		}
		tc.RootCAs = roots
	}
	if (cfg.CertFile == "") != (cfg.KeyFile == "") {
		return nil, errors.New("auditlog: TLS client certificate: set both the certificate and the key, or neither")
	}
	if cfg.CertFile != "" {
		pair, err := tls.LoadX509KeyPair(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("auditlog: TLS client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{pair}
	}
	return credentials.NewTLS(tc), nil
}

// Options are what NewConn needs to connect.
type Options struct {
	// Addr is the server's host:port; empty means DefaultAddress.
	Addr string
	// Token, when not nil, is sent as a bearer token on every call.
	Token TokenSource
	// TLS, when not nil, makes the connection use TLS; nil means plaintext (local development only).
	TLS *TLSConfig
}

// OptionsFromEnv reads Options from AUDITLOG_ADDR, AUDITLOG_TOKEN, AUDITLOG_TLS_CA,
// AUDITLOG_TLS_CERT, AUDITLOG_TLS_KEY and AUDITLOG_TLS_SERVER_NAME. Without AUDITLOG_TLS_CA the
// connection is plaintext; without AUDITLOG_TOKEN no token is sent.
func OptionsFromEnv() (Options, error) {
	o := Options{Addr: os.Getenv(EnvAddr)}
	if token := os.Getenv(EnvToken); token != "" {
		o.Token = StaticToken(token)
	}
	ca, cert, key, name := os.Getenv(EnvTLSCA), os.Getenv(EnvTLSCert), os.Getenv(EnvTLSKey), os.Getenv(EnvTLSServerName)
	if ca == "" {
		// Falling back to plaintext when a client certificate was asked for would send what the
		// caller meant to protect in the clear; say so instead.
		if cert != "" || key != "" || name != "" {
			return o, fmt.Errorf("auditlog: %s, %s and %s need %s (TLS)", EnvTLSCert, EnvTLSKey, EnvTLSServerName, EnvTLSCA)
		}
		return o, nil
	}
	o.TLS = &TLSConfig{CAFile: ca, ServerName: name, CertFile: cert, KeyFile: key}
	return o, nil
}

// NewConn connects to an auditlog server as o says; extra dial options (interceptors, say) are
// added after the SDK's own. Close the connection when done.
func NewConn(o Options, extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	addr := o.Addr
	if addr == "" {
		addr = DefaultAddress
	}
	var opts []grpc.DialOption
	if o.TLS != nil {
		creds, err := TLSCredentials(*o.TLS)
		if err != nil {
			return nil, err
		}
		opts = append(opts, grpc.WithTransportCredentials(creds))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if o.Token != nil {
		opts = append(opts, grpc.WithPerRPCCredentials(BearerToken(o.Token, o.TLS != nil)))
	}
	return grpc.NewClient(addr, append(opts, extra...)...)
}

// NewConnFromEnv is NewConn(OptionsFromEnv()): the connection every example and test uses.
func NewConnFromEnv(extra ...grpc.DialOption) (*grpc.ClientConn, error) {
	o, err := OptionsFromEnv()
	if err != nil {
		return nil, err
	}
	return NewConn(o, extra...)
}
