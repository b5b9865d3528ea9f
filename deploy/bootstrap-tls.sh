#!/usr/bin/env bash
# TLS for components/wml-server on a cluster without cert-manager: makes a CA and a server certificate for the
# Service's names, and creates (or replaces) the kubernetes.io/tls Secret wml-server-tls with tls.crt, tls.key
# and ca.crt, the keys cert-manager would write. The service serves tls.crt/tls.key; the operator verifies it
# with ca.crt (WML_OPERATOR_WML_CA_SECRET).
#
#   deploy/bootstrap-tls.sh [--namespace NS] [--days N] [--san NAME]... [--dir DIR] [--no-apply]
#
#   --namespace NS  the namespace of the service (default wml-stream-operator): also the certificate's names
#   --days N        validity of the server certificate (default 365; the CA gets 10 years)
#   --san NAME      one more DNS name or IP address in the certificate (repeatable)
#   --dir DIR       keep ca.crt, ca.key, tls.crt, tls.key there (default: a temporary folder, removed after:
#                   the CA's key is not needed again, a renewal runs this script again with a new CA)
#   --no-apply      only write the files (with --dir); no kubectl
#
# Needs openssl (1.1.1 or later) and, unless --no-apply, kubectl with the rights to create Secrets in NS.
# Running it again (a renewal) replaces the Secret with a new CA and certificate; its ca.crt keeps the previous
# CA after the new one, so the operator (which sees the Secret at once) still trusts the certificate the service
# serves until the service has reloaded the new one from its mounted files (the kubelet's sync, then within a
# minute). The run after that drops the older CA.
set -euo pipefail

namespace=wml-stream-operator
days=365
dir=""
apply=1
extra=()
while [ $# -gt 0 ]; do
  case "$1" in
    --namespace) namespace="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --san) extra+=("$2"); shift 2 ;;
    --dir) dir="$2"; shift 2 ;;
    --no-apply) apply=0; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "bootstrap-tls.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$apply" = 0 ] && [ -z "$dir" ]; then
  echo "bootstrap-tls.sh: --no-apply needs --dir (else the files would be removed)" >&2
  exit 2
fi

if [ -n "$dir" ]; then
  mkdir -p "$dir"
  work="$dir"
else
  work="$(mktemp -d)"
  trap 'rm -rf "$work"' EXIT
fi
umask 077  # the keys are readable by their owner only

# The Service's names, short to fully qualified: what the operator (and anything in the cluster) may dial.
service=wml-server
sans="DNS:${service},DNS:${service}.${namespace},DNS:${service}.${namespace}.svc"
sans="${sans},DNS:${service}.${namespace}.svc.cluster.local"
for name in "${extra[@]+"${extra[@]}"}"; do
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then
    sans="${sans},IP:${name}"
  else
    sans="${sans},DNS:${name}"
  fi
done

# A CA of its own (P-256, 10 years): it signs only this certificate, and only this service trusts it.
openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 -days 3650 \
  -subj "/CN=wml-server CA (${namespace})" \
  -addext "basicConstraints=critical,CA:TRUE,pathlen:0" \
  -addext "keyUsage=critical,keyCertSign,cRLSign" \
  -keyout "$work/ca.key" -out "$work/ca.crt" 2>/dev/null

# The server's key and certificate, for the Service's names only (serverAuth).
openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 -sha256 \
  -subj "/CN=${service}.${namespace}.svc" -keyout "$work/tls.key" -out "$work/tls.csr" 2>/dev/null
cat > "$work/tls.ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=${sans}
EOF
openssl x509 -req -in "$work/tls.csr" -CA "$work/ca.crt" -CAkey "$work/ca.key" -CAcreateserial \
  -days "$days" -sha256 -extfile "$work/tls.ext" -out "$work/tls.crt" 2>/dev/null
rm -f "$work/tls.csr" "$work/tls.ext" "$work/ca.srl"
openssl verify -CAfile "$work/ca.crt" "$work/tls.crt" >/dev/null

if [ "$apply" = 1 ]; then
  # The Secret's current CA (the first certificate of its ca.crt), kept after the new one for the overlap.
  previous="$(kubectl -n "$namespace" get secret wml-server-tls -o 'jsonpath={.data.ca\.crt}' 2>/dev/null || true)"
  if [ -n "$previous" ]; then
    printf '%s' "$previous" | base64 -d | awk '/-----BEGIN CERTIFICATE-----/ {n++} n == 1' >> "$work/ca.crt"
  fi
  # create --dry-run | apply: creates the Secret, or replaces its data when it exists (a renewal); server-side, so
  # no last-applied annotation holds a second copy of the key.
  kubectl -n "$namespace" create secret generic wml-server-tls --type=kubernetes.io/tls \
    --from-file=tls.crt="$work/tls.crt" --from-file=tls.key="$work/tls.key" --from-file=ca.crt="$work/ca.crt" \
    --dry-run=client -o yaml |
    kubectl apply --server-side --force-conflicts --field-manager=bootstrap-tls -f -
  kept="$([ -n "$previous" ] && echo " (and the previous CA, for the overlap)" || true)"
  echo "Secret ${namespace}/wml-server-tls holds tls.crt, tls.key and ca.crt${kept} (names: ${sans//DNS:/})"
else
  echo "wrote ${work}/ca.crt, ca.key, tls.crt, tls.key (names: ${sans//DNS:/})"
fi
