#!/usr/bin/env bash
# A private Postfix on 127.0.0.1 for asyncmail interop checks. Run as root, by hand.
#
#   benchmarks/interop/run_postfix.sh start     # set up and start (idempotent: wipes state)
#   benchmarks/interop/run_postfix.sh stop      # stop and leave files for inspection
#   benchmarks/interop/run_postfix.sh clean     # stop and remove everything under $BASE
#   benchmarks/interop/run_postfix.sh count     # delivered message files in the catch-all Maildir
#
# Ports (all 127.0.0.1 only):
#   2525  plain SMTP, no TLS, no AUTH
#   2526  STARTTLS offered (may), AUTH only after TLS
#   2587  submission: STARTTLS required (encrypt), AUTH PLAIN LOGIN CRAM-MD5 only after TLS
#   2591, 2592, 2593  like 2587 but offering only AUTH PLAIN, LOGIN, CRAM-MD5 respectively
#   2527  plain, smtpd_timeout=3s (the server drops idle pooled connections with 421)
#   2528  plain, reject_non_fqdn_helo_hostname (a strict HELO policy)
#   2529  plain, at most 2 concurrent connections per client (421 on the 3rd)
#   2465  implicit TLS (smtpd_tls_wrappermode=yes), AUTH
#   2530  plain, OpenDKIM verifier as milter (adds Authentication-Results), if opendkim is installed
#   2531  plain, logs as postfix/p2531 with smtpd's command transcript (DSN, round-robin)
#   2532  plain, logs as postfix/p2532 (the good relay of the failover checks)
#   2533  plain, logs as postfix/p2533 (with 2532, the pair of the round-robin check)
#   2534  plain, logs as postfix/p2534 (CHUNKING checks): sender reject-sender@ refused at MAIL
#         (smtpd_delay_reject=no), and a message with "X-Interop-Verdict: reject" refused at
#         the end of its content (header_checks in its own cleanup service, cleanup_p2534)
# OpenDKIM (Mode v) listens on 127.0.0.1:2891 and reads the public keys of
# rsa1._domainkey.example.com and ed1._domainkey.example.com from $BASE/dkim/keys.txt
# (TestPublicKeys, no DNS); _dkim_keys.py creates the keys once.
# Every recipient is accepted (virtual_mailbox_domains = static:all) and delivered into one
# Maildir, $BASE/mail/catchall/new, one file per recipient, except recipients refused by
# rcpt_access: reject-*@ -> 550 5.1.1, tempfail-*@ -> 450 4.2.0.
# SASL: Cyrus sasldb, user "user" password "secret" in realm interop.test.
# TLS: a trustme CA; the CA is $BASE/certs/client.pem (pass it as ?ca_file=).
# Log: $BASE/maillog (set DEBUG=1 for smtpd's full command transcript of 127.0.0.1).
set -euo pipefail

BASE=${BASE:-/tmp/interop}
PF=$BASE/postfix
PY=${PY:-$(cd "$(dirname "$0")/../.." && pwd)/.venv/bin/python}
HERE=$(cd "$(dirname "$0")" && pwd)
OD=$BASE/opendkim
MILTER_PORT=2891

stop_opendkim() {
    if [ -f "$OD/opendkim.pid" ]; then
        local pid
        pid=$(cat "$OD/opendkim.pid")
        kill "$pid" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$OD/opendkim.pid"
    fi
}

# OpenDKIM as a verifying milter; public keys from a file (TestPublicKeys), never DNS.
start_opendkim() {
    stop_opendkim
    rm -rf "$OD"
    mkdir -p "$OD"
    "$PY" "$HERE/_dkim_keys.py"
    cat >"$OD/opendkim.conf" <<CONF
Mode                v
Socket              inet:$MILTER_PORT@127.0.0.1
PidFile             $OD/opendkim.pid
UserID              opendkim:opendkim
Background          yes
# no client is "internal": every message is verified, none signed
InternalHosts       csl:192.0.2.1
AlwaysAddARHeader   yes
AuthservID          mx.interop.test
# "intended for use only during automated testing": keys from this file, not DNS
TestPublicKeys      $BASE/dkim/keys.txt
Syslog              yes
LogResults          yes
LogWhy              yes
CONF
    chown opendkim:opendkim "$OD"
    opendkim -x "$OD/opendkim.conf"
    for _ in $(seq 50); do
        (exec 3<>/dev/tcp/127.0.0.1/$MILTER_PORT) 2>/dev/null && break
        sleep 0.1
    done
}

stop() {
    stop_opendkim
    if [ -f "$PF/main.cf" ]; then
        postfix -c "$PF" stop 2>/dev/null || true
        # wait for master to go away
        for _ in $(seq 50); do
            [ -f "$PF/spool/pid/master.pid" ] && kill -0 "$(tr -d ' ' <"$PF/spool/pid/master.pid")" 2>/dev/null || break
            sleep 0.1
        done
    fi
}

start() {
    command -v postfix >/dev/null || { echo "install postfix sasl2-bin libsasl2-modules" >&2; exit 1; }
    stop
    rm -rf "$PF" "$BASE/mail" "$BASE/maillog"
    mkdir -p "$PF/sasl" "$PF/spool" "$PF/data" "$BASE/mail" "$BASE/certs"
    chown nobody:nogroup "$BASE/mail"
    chown postfix:postfix "$PF/data"

    if [ ! -f "$BASE/certs/server.pem" ]; then
        "$PY" -m trustme -q -d "$BASE/certs" -i localhost 127.0.0.1 ::1
    fi
    chmod 644 "$BASE/certs/"*.pem
    chmod 600 "$BASE/certs/server.key"

    cat >"$PF/rcpt_access" <<'MAP'
/^reject-/    550 5.1.1 no such user here (interop test)
/^tempfail-/  450 4.2.0 try again later (interop test)
MAP
    cat >"$PF/sender_access" <<'MAP'
/^reject-sender@/  553 5.7.1 sender refused (interop test)
MAP
    cat >"$PF/header_checks" <<'MAP'
/^X-Interop-Verdict: reject/  REJECT content refused (interop test)
MAP

    cat >"$PF/sasl/smtpd.conf" <<CONF
pwcheck_method: auxprop
auxprop_plugin: sasldb
mech_list: PLAIN LOGIN CRAM-MD5
sasldb_path: $PF/sasldb2
CONF
    for mech in PLAIN LOGIN CRAM-MD5; do
        name=$(echo "$mech" | tr -d - | tr A-Z a-z)
        sed "s/^mech_list: .*/mech_list: $mech/" "$PF/sasl/smtpd.conf" >"$PF/sasl/$name.conf"
    done
    echo secret | saslpasswd2 -p -f "$PF/sasldb2" -c -u interop.test user
    chown postfix:postfix "$PF/sasldb2"
    chmod 600 "$PF/sasldb2"

    local debug=""
    if [ "${DEBUG:-0}" = 1 ]; then debug="debug_peer_list = 127.0.0.1
debug_peer_level = 2"; fi

    cat >"$PF/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $PF/spool
data_directory = $PF/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = $BASE/maillog
maillog_file_prefixes = $BASE
myhostname = mx.interop.test
mydomain = interop.test
myorigin = \$mydomain
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
relayhost =
smtputf8_enable = yes
message_size_limit = 10240000
virtual_mailbox_domains = static:all
virtual_mailbox_maps = static:catchall/
virtual_mailbox_base = $BASE/mail
virtual_uid_maps = static:65534
virtual_gid_maps = static:65534
virtual_mailbox_limit = 0
smtpd_relay_restrictions = permit_mynetworks, reject_unauth_destination
smtpd_recipient_restrictions = check_recipient_access regexp:$PF/rcpt_access, permit
smtpd_tls_cert_file = $BASE/certs/server.pem
smtpd_tls_key_file = $BASE/certs/server.key
smtpd_tls_loglevel = 1
smtpd_tls_received_header = yes
smtpd_sasl_authenticated_header = yes
smtpd_sasl_type = cyrus
smtpd_sasl_path = smtpd
cyrus_sasl_config_path = $PF/sasl
smtpd_sasl_local_domain = interop.test
smtpd_sasl_security_options = noanonymous
smtpd_sasl_tls_security_options = noanonymous
smtpd_client_connection_rate_limit = 0
$debug
CONF

    cat >"$PF/master.cf" <<'CONF'
127.0.0.1:2525 inet n - n - - smtpd
  -o smtpd_tls_security_level=none
  -o smtpd_sasl_auth_enable=no
127.0.0.1:2526 inet n - n - - smtpd
  -o smtpd_tls_security_level=may
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
127.0.0.1:2587 inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt
  -o smtpd_sasl_auth_enable=yes
  -o smtpd_tls_auth_only=yes
127.0.0.1:2591 inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes -o smtpd_sasl_path=plain
127.0.0.1:2592 inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes -o smtpd_sasl_path=login
127.0.0.1:2593 inet n - n - - smtpd
  -o smtpd_tls_security_level=encrypt -o smtpd_sasl_auth_enable=yes -o smtpd_sasl_path=crammd5
127.0.0.1:2527 inet n - n - - smtpd
  -o smtpd_tls_security_level=none -o smtpd_sasl_auth_enable=no -o smtpd_timeout=3s
127.0.0.1:2528 inet n - n - - smtpd
  -o smtpd_tls_security_level=none -o smtpd_sasl_auth_enable=no -o smtpd_helo_required=yes
  -o smtpd_helo_restrictions=reject_invalid_helo_hostname,reject_non_fqdn_helo_hostname
127.0.0.1:2529 inet n - n - - smtpd
  -o smtpd_tls_security_level=none -o smtpd_sasl_auth_enable=no
  -o smtpd_client_connection_count_limit=2 -o smtpd_client_event_limit_exceptions=
127.0.0.1:2465 inet n - n - - smtpd
  -o smtpd_tls_wrappermode=yes
  -o smtpd_sasl_auth_enable=yes
127.0.0.1:2531 inet n - n - - smtpd
  -o smtpd_tls_security_level=none -o smtpd_sasl_auth_enable=no -o syslog_name=postfix/p2531
  -o debug_peer_list=127.0.0.1 -o debug_peer_level=1
127.0.0.1:2532 inet n - n - - smtpd
  -o smtpd_tls_security_level=none -o smtpd_sasl_auth_enable=no -o syslog_name=postfix/p2532
127.0.0.1:2533 inet n - n - - smtpd
  -o smtpd_tls_security_level=none -o smtpd_sasl_auth_enable=no -o syslog_name=postfix/p2533
pickup     unix  n - n 60   1 pickup
cleanup    unix  n - n -    0 cleanup
qmgr       unix  n - n 300  1 qmgr
tlsmgr     unix  - - n 1000? 1 tlsmgr
rewrite    unix  - - n -    - trivial-rewrite
bounce     unix  - - n -    0 bounce
defer      unix  - - n -    0 bounce
trace      unix  - - n -    0 bounce
verify     unix  - - n -    1 verify
flush      unix  n - n 1000? 0 flush
proxymap   unix  - - n -    - proxymap
proxywrite unix  - - n -    1 proxymap
smtp       unix  - - n -    - smtp
relay      unix  - - n -    - smtp
showq      unix  n - n -    - showq
error      unix  - - n -    - error
retry      unix  - - n -    - error
discard    unix  - - n -    - discard
local      unix  - n n -    - local
virtual    unix  - n n -    - virtual
lmtp       unix  - - n -    - lmtp
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
CONF

    # the CHUNKING checks (_checks_chunking.py): refusals at MAIL, RCPT and end of content
    cat >>"$PF/master.cf" <<CONF
127.0.0.1:2534 inet n - n - - smtpd
  -o smtpd_tls_security_level=none -o smtpd_sasl_auth_enable=no -o syslog_name=postfix/p2534
  -o smtpd_delay_reject=no -o cleanup_service_name=cleanup_p2534
  -o { smtpd_sender_restrictions = check_sender_access regexp:$PF/sender_access }
cleanup_p2534 unix n - n - 0 cleanup
  -o syslog_name=postfix/p2534 -o header_checks=regexp:$PF/header_checks
CONF

    local milter_ports=""
    if command -v opendkim >/dev/null; then
        start_opendkim
        milter_ports=2530
        cat >>"$PF/master.cf" <<CONF
127.0.0.1:2530 inet n - n - - smtpd
  -o smtpd_tls_security_level=none -o smtpd_sasl_auth_enable=no -o syslog_name=postfix/p2530
  -o smtpd_milters=inet:127.0.0.1:$MILTER_PORT -o milter_default_action=tempfail
CONF
    else
        echo "opendkim not installed: no port 2530 (apt-get install -y opendkim opendkim-tools)" >&2
    fi

    postfix -c "$PF" set-permissions >/dev/null 2>&1 || true
    postfix -c "$PF" check
    postfix -c "$PF" start
    for port in 2525 2526 2527 2528 2529 2531 2532 2533 2534 2587 2591 2592 2593 2465 $milter_ports; do
        for _ in $(seq 50); do
            (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break
            sleep 0.1
        done
    done
    echo "postfix $(postconf -h mail_version) running from $PF (log $BASE/maillog)"
}

count() {
    find "$BASE/mail/catchall/new" -type f 2>/dev/null | wc -l
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    clean) stop; rm -rf "$PF" "$OD" "$BASE/dkim" "$BASE/mail" "$BASE/maillog" ;;
    count) count ;;
    *) echo "usage: $0 start|stop|clean|count" >&2; exit 2 ;;
esac
