#!/usr/bin/env bash
# A private Exim 4 on 127.0.0.1 for asyncmail interop checks. Run as root, by hand.
#
#   benchmarks/interop/run_exim.sh start|stop|clean|count
#
# Exim conflicts with Postfix as a Debian package (both provide mail-transport-agent), so
# this runs exim4-daemon-light extracted from its .deb (apt-get download + dpkg-deb -x)
# into $BASE/eximroot, without installing it. It needs the "Debian-exim" system user
# (compiled into the binary): `useradd --system --no-create-home Debian-exim`.
#
# Ports (127.0.0.1 only):
#   3525  plain SMTP, no STARTTLS, no AUTH
#   3526  STARTTLS offered, AUTH after TLS
#   3527  plain, smtp_receive_timeout=3s (drops idle pooled connections)
#   3528  plain, EHLO must be a dotted name or an address literal (a strict HELO policy)
#   3529  plain, at most 2 concurrent connections per host (smtp_accept_max_per_host)
#   3587  STARTTLS required (MAIL refused 530 before TLS), AUTH PLAIN LOGIN CRAM-MD5 after TLS
#   3591, 3592, 3593  like 3587 but offering only PLAIN, LOGIN, CRAM-MD5 respectively
#   3465  implicit TLS (tls_on_connect_ports), AUTH
# Every recipient is delivered into $BASE/exim/mail (Maildir) except reject-* (550 5.1.1)
# and tempfail-* (450 4.2.0). User "user", password "secret". Certificates: the trustme
# files made by run_postfix.sh (or made here). Logs: $BASE/exim/log/mainlog, rejectlog.
set -euo pipefail

BASE=${BASE:-/tmp/interop}
EX=$BASE/exim
ROOT=$BASE/eximroot
BIN=$ROOT/usr/sbin/exim4
LIBS=$ROOT/usr/lib/x86_64-linux-gnu
PY=${PY:-$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/python}

fetch() {
    [ -x "$BIN" ] && return
    mkdir -p "$BASE/debs" "$ROOT"
    (cd "$BASE/debs" && apt-get download exim4-daemon-light exim4-base libgnutls-dane0 libidn12)
    for f in "$BASE"/debs/*.deb; do dpkg-deb -x "$f" "$ROOT"; done
}

unsetuid() {
    # the libraries come from LD_LIBRARY_PATH, which the loader ignores in a setuid
    # binary run by Debian-exim: Exim's re-exec for delivery would then fail silently
    chmod u-s "$BIN"
}

stop() {
    if [ -f "$EX/exim.pid" ]; then
        kill "$(cat "$EX/exim.pid")" 2>/dev/null || true
        rm -f "$EX/exim.pid"
    fi
}

start() {
    fetch
    unsetuid
    id Debian-exim >/dev/null 2>&1 || { echo "needs: useradd --system --no-create-home Debian-exim" >&2; exit 1; }
    stop
    rm -rf "$EX"
    mkdir -p "$EX/spool" "$EX/log" "$EX/mail" "$BASE/certs"
    chown -R Debian-exim "$EX/spool" "$EX/log"
    chown Debian-exim "$EX/mail"
    if [ ! -f "$BASE/certs/server.pem" ]; then
        "$PY" -m trustme -q -d "$BASE/certs" -i localhost 127.0.0.1 ::1
    fi
    cp "$BASE/certs/server.pem" "$BASE/certs/server.key" "$EX/"
    chown Debian-exim "$EX/server.pem" "$EX/server.key"

    cat >"$EX/exim.conf" <<CONF
exim_path = $BIN
keep_environment = LD_LIBRARY_PATH
primary_hostname = exim.interop.test
qualify_domain = interop.test
local_interfaces = 127.0.0.1
daemon_smtp_ports = 3525 : 3526 : 3527 : 3528 : 3529 : 3587 : 3591 : 3592 : 3593 : 3465
tls_on_connect_ports = 3465
spool_directory = $EX/spool
log_file_path = $EX/log/%slog
pid_file_path = $EX/exim.pid
log_selector = +smtp_protocol_error +smtp_syntax_error +tls_cipher +received_recipients +smtp_connection +pipelining
tls_certificate = $EX/server.pem
tls_privatekey = $EX/server.key
tls_advertise_hosts = \${if <{\$received_port}{3587}{\${if eq{\$received_port}{3526}{*}{}}}{*}}
auth_advertise_hosts = \${if def:tls_in_cipher {*}{}}
smtputf8_advertise_hosts = *
message_size_limit = 10M
host_lookup =
rfc1413_hosts =
acl_smtp_mail = acl_mail
acl_smtp_rcpt = acl_rcpt
acl_smtp_data = acl_data
smtp_accept_max = 200
smtp_accept_max_per_host = \${if eq{\$received_port}{3529}{2}{200}}
smtp_receive_timeout = \${if eq{\$received_port}{3527}{3s}{5m}}
acl_smtp_helo = acl_helo
smtp_accept_queue_per_connection = 0
remote_max_parallel = 20
queue_run_max = 20

begin acl
acl_helo:
  deny    condition = \${if and{{eq{\$received_port}{3528}}{!match{\$sender_helo_name}{\N(\.|^\[.*\]\$)\N}}}}
          message = 5.5.2 <\$sender_helo_name>: need fully-qualified hostname (interop test)
  accept

acl_mail:
  deny    condition = \${if and{{!def:tls_in_cipher}{or{{eq{\$received_port}{3587}}{eq{\$received_port}{3591}}{eq{\$received_port}{3592}}{eq{\$received_port}{3593}}}}}}
          message = 5.7.0 STARTTLS required (interop test)
  accept

acl_rcpt:
  deny    local_parts = ^reject-
          message = 5.1.1 no such user here (interop test)
  defer   local_parts = ^tempfail-
          message = 4.2.0 try again later (interop test)
  accept

acl_data:
  accept

begin routers
catchall:
  driver = accept
  transport = maildir_t

begin transports
maildir_t:
  driver = appendfile
  directory = $EX/mail
  maildir_format
  create_directory
  delivery_date_add
  envelope_to_add
  return_path_add
  # the daemon runs as Debian-exim (an untrusted -C config drops root), so deliver as it
  user = Debian-exim
  mode = 0644

begin retry
*  *  F,1h,1m

begin authenticators
plain_server:
  driver = plaintext
  public_name = PLAIN
  server_prompts = :
  server_condition = \${if and{{eq{\$auth2}{user}}{eq{\$auth3}{secret}}}}
  server_set_id = \$auth2
  server_advertise_condition = \${if and{{def:tls_in_cipher}{!eq{\$received_port}{3592}}{!eq{\$received_port}{3593}}}}
login_server:
  driver = plaintext
  public_name = LOGIN
  server_prompts = Username:: : Password::
  server_condition = \${if and{{eq{\$auth1}{user}}{eq{\$auth2}{secret}}}}
  server_set_id = \$auth1
  server_advertise_condition = \${if and{{def:tls_in_cipher}{!eq{\$received_port}{3591}}{!eq{\$received_port}{3593}}}}
cram_server:
  driver = cram_md5
  public_name = CRAM-MD5
  server_secret = \${if eq{\$auth1}{user}{secret}fail}
  server_set_id = \$auth1
  server_advertise_condition = \${if and{{def:tls_in_cipher}{!eq{\$received_port}{3591}}{!eq{\$received_port}{3592}}}}
CONF
    chmod 644 "$EX/exim.conf"
    LD_LIBRARY_PATH=$LIBS "$BIN" -C "$EX/exim.conf" -bV >/dev/null
    LD_LIBRARY_PATH=$LIBS "$BIN" -C "$EX/exim.conf" -bd -q10s
    for port in 3525 3526 3527 3528 3529 3587 3591 3592 3593 3465; do
        for _ in $(seq 50); do
            (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
            sleep 0.1
        done
    done
    echo "$(LD_LIBRARY_PATH=$LIBS "$BIN" -C "$EX/exim.conf" -bV | head -1) running from $EX (log $EX/log/mainlog)"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    clean) stop; rm -rf "$EX" ;;
    count) find "$EX/mail/new" -type f 2>/dev/null | wc -l ;;
    *) echo "usage: $0 start|stop|clean|count" >&2; exit 2 ;;
esac
