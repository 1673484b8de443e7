#!/usr/bin/env bash
# Regenerates the throwaway test PKI of the TLS tests (never use it anywhere else): a CA, a server
# certificate for localhost/127.0.0.1, a client certificate (CN sdk-test-client) and an unrelated CA.
# Valid for 100 years, so the tests never start failing on a date; P-256 keys in PKCS#8, which every
# SDK's TLS stack reads.
set -euo pipefail
cd "$(dirname "$0")"
days=36500
key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
ca() {
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days $days -out "$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
leaf() {
  key "$1.key"
  openssl req -new -key "$1.key" -subj "/CN=$2" -out "$1.csr"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days $days -out "$1.pem" \
    -extfile <(printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\n%s\n' "$3")
  rm "$1.csr"
}
ca ca "auditlog test CA"
ca other-ca "another test CA"
leaf server "auditlog test server" "extendedKeyUsage=serverAuth
subjectAltName=DNS:localhost,IP:127.0.0.1"
leaf client "sdk-test-client" "extendedKeyUsage=clientAuth"
# The CA keys are not needed by the tests; keeping them out of the repository keeps this PKI throwaway.
rm -f ca.key other-ca.key ca.srl
