#!/usr/bin/env bash
# Make a throw-away CA and a server certificate for development: certs/make-dev-certs.sh DIR [NAME...]
# Names that look like IP addresses become IP SANs, others DNS SANs. Default: localhost 127.0.0.1.
set -euo pipefail
dir=${1:?usage: make-dev-certs.sh DIR [NAME...]}
shift || true
names=("$@")
[ ${#names[@]} -gt 0 ] || names=(localhost 127.0.0.1)
mkdir -p "$dir"
cd "$dir"
san=""
for n in "${names[@]}"; do
  if [[ $n =~ ^[0-9.]+$ || $n == *:* ]]; then san+="IP:$n,"; else san+="DNS:$n,"; fi
done
san=${san%,}
openssl req -x509 -newkey rsa:2048 -sha256 -days 30 -nodes -subj "/CN=entradir dev CA" \
  -keyout ca-key.pem -out ca.pem 2>/dev/null
openssl req -newkey rsa:2048 -sha256 -nodes -subj "/CN=${names[0]}" -keyout key.pem -out server.csr 2>/dev/null
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 30 -sha256 \
  -extfile <(printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth\n' "$san") -out cert.pem 2>/dev/null
rm -f server.csr ca.srl
chmod 600 key.pem ca-key.pem
echo "CA: $dir/ca.pem  certificate: $dir/cert.pem  key: $dir/key.pem  (SAN $san)"
