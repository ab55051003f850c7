#!/usr/bin/env bash
# Writes the files the overlays' secretGenerator reads: a private CA, one certificate per role (etcd members,
# routers, shards) naming the in-cluster DNS names other processes dial, and an API key.
set -euo pipefail

usage() {
  cat <<'EOF'
usage: deploy/kubernetes/make-secrets.sh --namespace NS --out DIR [--days 365] [--api-key KEY]
  Writes DIR/ca/ca.{crt,key} (keep ca.key offline: it issues certificates), DIR/{etcd,router,shard}/{ca.crt,tls.crt,tls.key}
  and DIR/api-keys (a fresh random key unless --api-key is given; comma-separate several to rotate).
  Certificates are valid for NAME.NS.svc names: *.etcd.NS.svc (members), *.shard.NS.svc (shard-N.shard.NS.svc,
  what routers dial), router.NS.svc. DIR must not exist yet: nothing is overwritten.
EOF
}

NS=""
OUT=""
DAYS=365
API_KEY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) NS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --days) DAYS=$2; shift 2 ;;
    --api-key) API_KEY=$2; shift 2 ;;
    -h | --help) usage; exit 0 ;;
    *) echo "make-secrets.sh: unknown argument $1" >&2; usage >&2; exit 2 ;;
  esac
done
[ -n "$NS" ] && [ -n "$OUT" ] || { usage >&2; exit 2; }
[[ "$NS" =~ ^[a-z0-9]([-a-z0-9]*[a-z0-9])?$ ]] || { echo "make-secrets.sh: $NS is not a namespace name" >&2; exit 2; }
[ -e "$OUT" ] && { echo "make-secrets.sh: $OUT exists; it is never overwritten (remove it, or choose another --out)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "make-secrets.sh: openssl is missing" >&2; exit 1; }

umask 077
mkdir -p "$OUT/ca" "$OUT/etcd" "$OUT/router" "$OUT/shard"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 -subj "/CN=expertmesh CA ($NS)" \
  -keyout "$OUT/ca/ca.key" -out "$OUT/ca/ca.crt" 2>/dev/null

# issue ROLE SAN: a certificate for serving and for client authentication (mutual TLS both ways).
issue() {
  local dir="$OUT/$1"
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$1.$NS" \
    -keyout "$dir/tls.key" -out "$dir/tls.csr" 2>/dev/null
  printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=critical,digitalSignature,keyEncipherment\nbasicConstraints=critical,CA:FALSE\n' "$2" >"$dir/ext.cnf"
  openssl x509 -req -in "$dir/tls.csr" -CA "$OUT/ca/ca.crt" -CAkey "$OUT/ca/ca.key" -CAcreateserial \
    -CAserial "$OUT/ca/ca.srl" -days "$DAYS" -extfile "$dir/ext.cnf" -out "$dir/tls.crt" 2>/dev/null
  rm "$dir/tls.csr" "$dir/ext.cnf"
  cp "$OUT/ca/ca.crt" "$dir/ca.crt"
}
svc="$NS.svc"
issue etcd "DNS:*.etcd.$svc,DNS:*.etcd.$svc.cluster.local,DNS:etcd.$svc,DNS:localhost,IP:127.0.0.1"
issue router "DNS:router.$svc,DNS:router.$svc.cluster.local"
issue shard "DNS:*.shard.$svc,DNS:*.shard.$svc.cluster.local"

if [ -z "$API_KEY" ]; then API_KEY="sk-$(openssl rand -hex 24)"; fi
printf '%s' "$API_KEY" >"$OUT/api-keys"
echo "wrote $OUT (CA key: $OUT/ca/ca.key — move it offline once the certificates are issued)" >&2
