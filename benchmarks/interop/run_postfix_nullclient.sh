#!/usr/bin/env bash
# A second private Postfix on 127.0.0.1: a null client whose relayhost is `asyncmail relay`
# (the relay checks of check.py, and benchmarks/relay_bench.py). Run as root, by hand.
#
#   benchmarks/interop/run_postfix_nullclient.sh start   # set up and start (wipes its state)
#   benchmarks/interop/run_postfix_nullclient.sh stop
#   benchmarks/interop/run_postfix_nullclient.sh clean   # stop and remove $BASE/nullclient
#
# It listens on 127.0.0.1:${PORT:-2641} (plain, no AUTH) and sends every message, whatever
# its recipient, to relayhost ${RELAYHOST:-[127.0.0.1]:2640}: where check.py --only relay
# starts `asyncmail relay`, which delivers to run_postfix.sh's instance on port 2525.
# It runs beside run_postfix.sh's instance: its own queue, data and log ($BASE/nullclient).
set -euo pipefail

BASE=${BASE:-/tmp/interop}
NC=$BASE/nullclient
PORT=${PORT:-2641}
RELAYHOST=${RELAYHOST:-[127.0.0.1]:2640}

stop() {
    if [ -f "$NC/main.cf" ]; then
        postfix -c "$NC" stop 2>/dev/null || true
        for _ in $(seq 50); do
            [ -f "$NC/spool/pid/master.pid" ] && kill -0 "$(tr -d ' ' <"$NC/spool/pid/master.pid")" 2>/dev/null || break
            sleep 0.1
        done
    fi
}

start() {
    command -v postfix >/dev/null || { echo "install postfix" >&2; exit 1; }
    stop
    rm -rf "$NC"
    mkdir -p "$NC/spool" "$NC/data"
    chown postfix:postfix "$NC/data"
    cat >"$NC/main.cf" <<CONF
compatibility_level = 3.6
queue_directory = $NC/spool
data_directory = $NC/data
command_directory = /usr/sbin
daemon_directory = /usr/lib/postfix/sbin
meta_directory = /etc/postfix
shlib_directory = /usr/lib/postfix
mail_owner = postfix
setgid_group = postdrop
syslog_name = postfix-nullclient
maillog_file = $NC/maillog
maillog_file_prefixes = $BASE
myhostname = nullclient.interop.test
mydomain = interop.test
myorigin = \$mydomain
mydestination =
local_transport = error:local delivery is disabled
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
alias_maps =
alias_database =
relayhost = $RELAYHOST
smtputf8_enable = yes
smtpd_relay_restrictions = permit_mynetworks, reject
smtp_tls_security_level = none
smtpd_client_connection_rate_limit = 0
default_destination_concurrency_limit = 20
# retry soon: a relay that was down is tried again within seconds
minimal_backoff_time = 2s
maximal_backoff_time = 4s
queue_run_delay = 2s
CONF
    cat >"$NC/master.cf" <<CONF
127.0.0.1:$PORT inet n - n - - smtpd
  -o smtpd_tls_security_level=none -o smtpd_sasl_auth_enable=no
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
anvil      unix  - - n -    1 anvil
scache     unix  - - n -    1 scache
postlog    unix-dgram n - n - 1 postlogd
CONF
    postfix -c "$NC" set-permissions >/dev/null 2>&1 || true
    postfix -c "$NC" check
    postfix -c "$NC" start
    for _ in $(seq 50); do
        (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break
        sleep 0.1
    done
    echo "postfix null client on 127.0.0.1:$PORT, relayhost $RELAYHOST (log $NC/maillog)"
}

case "${1:-start}" in
    start) start ;;
    stop) stop ;;
    clean) stop; rm -rf "$NC" ;;
    *) echo "usage: $0 start|stop|clean" >&2; exit 2 ;;
esac
