#!/bin/sh
# certs.sh DIR — a throw-away lab CA and a server certificate for localhost and
# 127.0.0.1, signed by it: DIR/ca.pem, DIR/server.pem, DIR/server.key.
# mailshift verifies backends by the host in their URL (127.0.0.1), so the IP
# SAN is required; rustls also wants a proper v3 CA (basicConstraints CA:TRUE).
# EC P-256 keys: generation takes milliseconds, so tests make fresh ones.
set -eu
dir=${1:?usage: certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
umask 077
openssl ecparam -name prime256v1 -genkey -noout -out ca.key 2>/dev/null
openssl req -x509 -new -key ca.key -sha256 -days 3650 -subj "/CN=mailshift lab CA" \
	-addext "basicConstraints=critical,CA:TRUE" \
	-addext "keyUsage=critical,keyCertSign,cRLSign" \
	-addext "subjectKeyIdentifier=hash" \
	-out ca.pem
openssl ecparam -name prime256v1 -genkey -noout -out server.key 2>/dev/null
openssl req -new -key server.key -subj "/CN=localhost" -out server.csr
cat > server.ext <<'EXT'
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost,IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EXT
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial \
	-sha256 -days 3650 -extfile server.ext -out server.pem 2>/dev/null
rm -f server.csr server.ext ca.srl
# Readable by the Dovecot/slapd processes and by non-root test runs.
chmod 644 ca.pem server.pem server.key
