#!/usr/bin/env bash
# nginx in front of a real arbiter, configured by deploy/nginx/ (arbiter.conf, arbiter.toml).
#
# Starts both in a temporary directory, on loopback only: nginx (Debian's, as a foreground
# process with its own prefix, pid and logs) on a free port instead of 8999, proxying to the
# arbiter's unix socket; the arbiter also listens on a free TCP port for the direct comparison.
# Checks, with the configs changed only in their paths and ports:
#   1. the seed's request (curl -F image=@grace_hopper.jpg) gets the same answer through nginx as
#      direct, and the Python reference's answer;
#   2. the arbiter's access log shows the client's address from X-Real-IP/X-Forwarded-For (a
#      distinct loopback source address), and a client's forged X-Forwarded-For is not believed;
#   3. the body limits agree: a body of exactly max_body reaches the arbiter both ways, one byte
#      more is 413 both ways, and nginx's 413 is JSON like the arbiter's;
#   4. the retry policy: workers SIGKILLed under load cost clients nothing through nginx
#      (tests/deploy/retry_load.py prints the figures, direct and through nginx).
# Needs: scripts/setup (nginx-light, the model, ONNX Runtime, the photos), the release binary
# (cargo build --release; ARBITER_BIN overrides), curl, python3. About 20 s.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${ARBITER_BIN:-$ROOT/target/release/arbiter}
PHOTO=$ROOT/var/photos/grace_hopper.jpg
MODEL=$ROOT/var/models/resnet50-voc20.onnx
ORT=$ROOT/var/onnxruntime/libonnxruntime.so.1.32.0
NGINX=${NGINX:-$(command -v nginx || echo /usr/sbin/nginx)}
PYTHON=${PYTHON:-python3}

fail() { printf 'nginx_test: FAIL: %s\n' "$*" >&2; exit 1; }
step() { printf 'nginx_test: %s\n' "$*" >&2; }
for f in "$BIN" "$PHOTO" "$MODEL" "$ORT" "$NGINX"; do
    [ -e "$f" ] || fail "$f is missing (run scripts/setup and cargo build --release)"
done
command -v curl >/dev/null || fail "curl is missing"

started=$(date +%s%N)
TMP=$(mktemp -d /tmp/arbiter-nginx.XXXXXX)
chmod 755 "$TMP"
ARBITER_PID=''
NGINX_PID=''
cleanup() {
    local rc=$?
    # Stop what this test started, by pid: nginx first (as the arbiter would), then the arbiter.
    if [ -n "$NGINX_PID" ] && kill -0 "$NGINX_PID" 2>/dev/null; then
        kill -QUIT "$NGINX_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$NGINX_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$NGINX_PID" 2>/dev/null || true
    fi
    if [ -n "$ARBITER_PID" ] && kill -0 "$ARBITER_PID" 2>/dev/null; then
        kill -TERM "$ARBITER_PID" 2>/dev/null || true
        for _ in $(seq 100); do kill -0 "$ARBITER_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$ARBITER_PID" 2>/dev/null || true
    fi
    if [ "$rc" -ne 0 ]; then
        echo "--- arbiter log (tail) ---" >&2; tail -n 30 "$TMP/arbiter.log" >&2 2>/dev/null || true
        echo "--- nginx error log (tail) ---" >&2; tail -n 15 "$TMP/nginx-error.log" >&2 2>/dev/null || true
    fi
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
NGINX_PORT=$(free_port)
DIRECT_PORT=$(free_port)
SOCK=$TMP/run/arbiter.sock

# sub FILE FROM TO: replaces FROM (literally) in FILE, failing when it is not there, so that a
# changed deploy/nginx file breaks this test instead of being silently tested as something else.
sub() {
    "$PYTHON" - "$@" <<'EOF'
import sys
path, old, new = sys.argv[1:]
text = open(path).read()
if old not in text:
    sys.exit(f"nginx_test: {path} has no {old!r} to replace")
open(path, "w").write(text.replace(old, new))
EOF
}

# --- the arbiter: deploy/nginx/arbiter.toml with local paths --------------------------------------
cp "$ROOT/deploy/nginx/arbiter.toml" "$TMP/arbiter.toml"
sub "$TMP/arbiter.toml" 'bind = ["unix:/run/arbiter/arbiter.sock"]' \
    "bind = [\"unix:$SOCK\", \"127.0.0.1:$DIRECT_PORT\"]"
sub "$TMP/arbiter.toml" '/run/arbiter/' "$TMP/run/"
sub "$TMP/arbiter.toml" '/var/lib/arbiter/resnet50-voc20.onnx' "$MODEL"
sub "$TMP/arbiter.toml" '/var/lib/arbiter/class_name.json' "$ROOT/etc/class_name.json"
sub "$TMP/arbiter.toml" '/usr/lib/arbiter/libonnxruntime.so.1.32.0' "$ORT"
if [ "$(id -u)" -eq 0 ]; then
    # Workers switch to an unprivileged user, as in production (that user is `arbiter` there).
    sub "$TMP/arbiter.toml" 'user = "arbiter"' 'user = "nobody"'
    sub "$TMP/arbiter.toml" 'group = "arbiter"' "group = \"$(id -gn nobody)\""
else
    sub "$TMP/arbiter.toml" 'user = "arbiter"' ''
    sub "$TMP/arbiter.toml" 'group = "arbiter"' ''
fi
"$BIN" check -c "$TMP/arbiter.toml" >/dev/null || fail "arbiter check rejects the generated config"
"$BIN" start -c "$TMP/arbiter.toml" >"$TMP/arbiter.log" 2>&1 &
ARBITER_PID=$!

# --- nginx: deploy/nginx/arbiter.conf inside a minimal main config -------------------------------
# NGINX_SITE: another site file to measure (the retry check then says what it costs).
cp "${NGINX_SITE:-$ROOT/deploy/nginx/arbiter.conf}" "$TMP/site.conf"
sub "$TMP/site.conf" 'listen 8999;' "listen 127.0.0.1:$NGINX_PORT;"
sub "$TMP/site.conf" 'unix:/run/arbiter/arbiter.sock' "unix:$SOCK"
user_line=
[ "$(id -u)" -eq 0 ] && user_line="user nobody $(id -gn nobody);"
cat >"$TMP/nginx.conf" <<EOF
$user_line
daemon off;
worker_processes 1;
pid $TMP/nginx.pid;
error_log $TMP/nginx-error.log info;
events { worker_connections 512; }
http {
    default_type application/octet-stream;
    log_format upstreams '\$remote_addr "\$request" \$status rt=\$request_time up=\$upstream_status';
    access_log $TMP/nginx-access.log upstreams;
    client_body_temp_path $TMP/client_body;
    proxy_temp_path $TMP/proxy;
    fastcgi_temp_path $TMP/fastcgi;
    uwsgi_temp_path $TMP/uwsgi;
    scgi_temp_path $TMP/scgi;
    include $TMP/site.conf;
}
EOF
"$NGINX" -t -q -p "$TMP/" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log" || fail "nginx -t rejects the config"
"$NGINX" -p "$TMP/" -c "$TMP/nginx.conf" -e "$TMP/nginx-error.log" &
NGINX_PID=$!

DIRECT=http://127.0.0.1:$DIRECT_PORT
PROXY=http://127.0.0.1:$NGINX_PORT
for _ in $(seq 600); do
    curl -fsS -o /dev/null "$PROXY/readyz" 2>/dev/null && break
    kill -0 "$ARBITER_PID" 2>/dev/null || fail "the arbiter exited"
    kill -0 "$NGINX_PID" 2>/dev/null || fail "nginx exited"
    sleep 0.1
done
curl -fsS -o /dev/null "$PROXY/readyz" || fail "not ready through nginx within 60 s"
ready_ms=$((($(date +%s%N) - started) / 1000000))
step "arbiter and nginx ready in ${ready_ms} ms"

# --- 1. the seed's request, direct and through nginx ---------------------------------------------
expected=$("$PYTHON" -c '
import json, sys
m = json.load(open(sys.argv[1]))
print(json.dumps([i for i in m["images"] if i["file"] == "grace_hopper.jpg"][0]["prediction"]))
' "$ROOT/var/reference/manifest.json")
direct=$(curl -fsS -F "image=@$PHOTO" "$DIRECT/model_predict")
proxied=$(curl -fsS -F "image=@$PHOTO" "$PROXY/model_predict")
same() { "$PYTHON" -c 'import json, sys; sys.exit(json.loads(sys.argv[1]) != json.loads(sys.argv[2]))' "$1" "$2"; }
same "$direct" "$proxied" || fail "nginx answered $proxied, direct $direct"
same "$direct" "$expected" || fail "the arbiter answered $direct, the Python reference $expected"
step "same answer direct and through nginx, and as the Python reference: $proxied"

# What nginx adds to one request: sequential requests, a connection each, median of 20.
latency() {
    "$PYTHON" - "$1" "$PHOTO" <<'EOF'
import http.client, statistics, sys, time, urllib.parse
url, photo = urllib.parse.urlsplit(sys.argv[1]), open(sys.argv[2], "rb").read()
body = (b'--b\r\nContent-Disposition: form-data; name="image"; filename="p.jpg"\r\n\r\n'
        + photo + b"\r\n--b--\r\n")
times = []
for _ in range(21):
    t = time.monotonic()
    c = http.client.HTTPConnection(url.hostname, url.port, timeout=30)
    c.request("POST", "/model_predict", body, {"Content-Type": "multipart/form-data; boundary=b"})
    r = c.getresponse()
    r.read()
    c.close()
    if r.status != 200:
        sys.exit(f"POST /model_predict answered {r.status}")
    times.append(time.monotonic() - t)
print(f"{statistics.median(times[1:]) * 1e3:.1f}")
EOF
}
lat_direct=$(latency "$DIRECT") || fail "sequential requests direct failed"
lat_proxy=$(latency "$PROXY") || fail "sequential requests through nginx failed"
step "one request at a time, median of 20: direct $lat_direct ms, through nginx $lat_proxy ms"

# --- 2. the client's address in the access log ---------------------------------------------------
# Through nginx the arbiter's peer is the unix socket; the address logged must be the client's.
# A distinct loopback source address (127.0.0.3) makes the line unambiguous.
curl -fsS -o /dev/null --interface 127.0.0.3 "$PROXY/healthz"
curl -fsS -o /dev/null --interface 127.0.0.4 -H 'X-Forwarded-For: 203.0.113.7' "$PROXY/healthz"
sleep 0.3
grep -q 'path="/healthz".*client="127.0.0.3"' "$TMP/arbiter.log" ||
    fail "no access log line with client=\"127.0.0.3\" for the request through nginx"
grep -q 'client="127.0.0.4"' "$TMP/arbiter.log" ||
    fail "the request with a forged X-Forwarded-For was not logged as from 127.0.0.4"
! grep -q 'client="203.0.113.7"' "$TMP/arbiter.log" ||
    fail "the arbiter believed a client's forged X-Forwarded-For"
grep -q '^127.0.0.3 "GET /healthz' "$TMP/nginx-access.log" || fail "nginx's access log lacks 127.0.0.3"
step "access log: client=\"127.0.0.3\" through nginx (peer: unix socket); a forged X-Forwarded-For is ignored"

# --- 3. the body limit agrees ---------------------------------------------------------------------
limit=$("$BIN" check -c "$TMP/arbiter.toml" | sed -n 's/^max_body = "\(.*\)"$/\1/p')
[ "$limit" = "20MiB" ] || fail "max_body is $limit, expected 20MiB like client_max_body_size 20m"
# body SIZE FILE: a multipart body of exactly SIZE bytes whose `image` is not an image.
body() {
    "$PYTHON" - "$@" <<'EOF'
import sys
size, path = int(sys.argv[1]), sys.argv[2]
head = b'--b\r\nContent-Disposition: form-data; name="image"; filename="x.jpg"\r\nContent-Type: image/jpeg\r\n\r\n'
tail = b"\r\n--b--\r\n"
with open(path, "wb") as f:
    f.write(head + b"x" * (size - len(head) - len(tail)) + tail)
EOF
}
post_body() { curl -sS -o "$TMP/answer" -w '%{http_code}' -H 'Content-Type: multipart/form-data; boundary=b' \
    --data-binary "@$1" "$2/model_predict"; }
max=$((20 * 1024 * 1024))
body "$max" "$TMP/at-limit"
body $((max + 1)) "$TMP/over-limit"
at_direct=$(post_body "$TMP/at-limit" "$DIRECT")
at_proxy=$(post_body "$TMP/at-limit" "$PROXY")
over_direct=$(post_body "$TMP/over-limit" "$DIRECT")
over_proxy=$(post_body "$TMP/over-limit" "$PROXY")
over_proxy_body=$(cat "$TMP/answer")
rm -f "$TMP/at-limit" "$TMP/over-limit"
[ "$at_direct" != 413 ] && [ "$at_direct" = "$at_proxy" ] ||
    fail "a body of exactly 20 MiB: direct $at_direct, through nginx $at_proxy (want the same, not 413)"
[ "$over_direct" = 413 ] && [ "$over_proxy" = 413 ] ||
    fail "a body of 20 MiB + 1: direct $over_direct, through nginx $over_proxy (want 413 both)"
"$PYTHON" -c 'import json, sys; assert "error" in json.loads(sys.argv[1])' "$over_proxy_body" ||
    fail "nginx's 413 is not JSON: $over_proxy_body"
step "body limit: 20 MiB exactly -> $at_direct direct and through nginx; 20 MiB + 1 -> 413 both, JSON"

# --- 4. the retry policy under worker kills -------------------------------------------------------
figures=$("$PYTHON" "$ROOT/tests/deploy/retry_load.py" --arbiter "$BIN" --config "$TMP/arbiter.toml" \
    --direct "127.0.0.1:$DIRECT_PORT" --nginx "127.0.0.1:$NGINX_PORT" --image "$PHOTO" \
    --expected "$expected" --clients "${RETRY_CLIENTS:-2}" --kills "${RETRY_KILLS:-4}" \
    --nginx-log "$TMP/nginx-access.log") ||
    fail "the retry policy did not hold (figures above)"
step "figures: $figures"

elapsed=$((($(date +%s%N) - started) / 1000000))
step "ok ($((elapsed / 1000)).$((elapsed % 1000 / 100)) s)"
