#!/bin/bash
# up.sh [--no-serve] — the local mailshift lab on fixed loopback ports:
#   LDAP 31389 (slapd with syncprov)
#   old store (Maildir, separator /): IMAP 31143, IMAPS 31993, LMTP 31024
#   new store (sdbox,   separator .): IMAP 31243, IMAPS 32993, LMTP 31224
#   mailshift: IMAP 30143, IMAPS 30993, admin 30080 (token "labtoken")
# Users user0001..user0060 / pwNNNN (0001-0040 on old.example.org, the rest on
# new.example.org), master user admin / adminpw on both stores.
# State lives in $LAB_DIR (default /tmp/mailshift-lab); re-running replaces it.
# Then it runs mailshift in the foreground (unless --no-serve); extra TOML for
# the mailshift config can be given in $LAB_EXTRA_TOML. Stop with down.sh.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
LAB_DIR=${LAB_DIR:-/tmp/mailshift-lab}
export LAB_DIR
# shellcheck source=lib.sh
. "$here/lib.sh"

serve=yes
[ "${1:-}" = "--no-serve" ] && serve=no

LDAP_PORT=31389
ADMIN_DN="cn=admin,dc=example,dc=org"
ADMIN_PW=secret
MASTER_USER=admin
MASTER_PW=adminpw

"$here/install-deps.sh"
"$here/down.sh" >/dev/null 2>&1 || true

rm -rf "$LAB_DIR"
mkdir -p "$LAB_DIR"
# Dovecot's mail processes (uid mailshiftlab) must traverse into the store.
chmod 755 "$LAB_DIR"

echo "== certificates"
"$here/certs.sh" "$LAB_DIR/certs"

echo "== slapd on ldap://127.0.0.1:$LDAP_PORT"
mkdir -p "$LAB_DIR/slapd/data"
render "$here/slapd.conf.in" "$LAB_DIR/slapd/slapd.conf" \
	DIR="$LAB_DIR/slapd" SCHEMA_DIR="$repo/deploy/ldap" ROOT_PW="$ADMIN_PW" SYNCPROV="" \
	STATUS_SCHEMA="$repo/deploy/ldap/mailuserstatus.schema"
# Without -d, slapd daemonizes and writes slapd.pid; -d 256 would keep it in front.
slapd -f "$LAB_DIR/slapd/slapd.conf" -h "ldap://127.0.0.1:$LDAP_PORT/" \
	-s 0 >"$LAB_DIR/slapd/slapd.log" 2>&1 \
	|| { cat "$LAB_DIR/slapd/slapd.log" >&2; exit 1; }
wait_port "$LDAP_PORT" slapd "$LAB_DIR/slapd/slapd.log"

ldap_url="ldap://127.0.0.1:$LDAP_PORT"
{
	cat "$here/base.ldif.in"
	echo
	for i in $(seq 1 60); do
		n=$(printf '%04d' "$i")
		if [ "$i" -le 40 ]; then host=old.example.org; else host=new.example.org; fi
		sed -e "s|@LOGIN@|user$n|g; s|@PASSWORD@|pw$n|g; s|@MAILHOST@|$host|g" \
			"$here/user.ldif.in"
	done
} >"$LAB_DIR/slapd/users.ldif"
ldapadd -x -H "$ldap_url" -D "$ADMIN_DN" -w "$ADMIN_PW" -f "$LAB_DIR/slapd/users.ldif" >/dev/null

mail_uid=$(id -u mailshiftlab)
mail_gid=$(id -g mailshiftlab)

# start_dovecot NAME IMAP IMAPS LMTP LOCATION SEPARATOR SUBMISSION POP3 POP3S SIEVE [SIEVE_SETTINGS]
start_dovecot() {
	local name=$1 dir="$LAB_DIR/$1"
	mkdir -p "$dir/mail"
	chown "$mail_uid:$mail_gid" "$dir/mail"
	render "$here/dovecot.conf.in" "$dir/dovecot.conf" \
		DIR="$dir" NAME="$name" IMAP_PORT="$2" IMAPS_PORT="$3" LMTP_PORT="$4" \
		SUBMISSION_PORT="$7" SUBMISSION_RELAY_PORT=30025 POP3_PORT="$8" POP3S_PORT="$9" \
		SSL_CERT="$LAB_DIR/certs/server.pem" SSL_KEY="$LAB_DIR/certs/server.key" \
		MAIL_HOME="$dir/mail/%n" MAIL_LOCATION="$5" SEPARATOR="$6" MAX_USERIP=50 \
		MAIL_UID="$mail_uid" MAIL_GID="$mail_gid" \
		LOGIN_USER=dovenull INTERNAL_USER=dovecot INTERNAL_GROUP=dovecot
	render "$here/dovecot-sieve.conf.in" "$dir/dovecot-sieve.conf" \
		SIEVE_PORT="${10}" SIEVE_SETTINGS="${11:-}"
	cat "$dir/dovecot-sieve.conf" >>"$dir/dovecot.conf"
	render "$here/dovecot-ldap.conf.ext.in" "$dir/dovecot-ldap.conf.ext" \
		LDAP_URL="$ldap_url" ADMIN_DN="$ADMIN_DN" ADMIN_PASSWORD="$ADMIN_PW"
	render "$here/master-users.in" "$dir/master-users" \
		MASTER_USER="$MASTER_USER" MASTER_PASSWORD="$MASTER_PW"
	# Read by the auth process (user dovecot); lab secrets only.
	chmod 644 "$dir/dovecot-ldap.conf.ext" "$dir/master-users"
	echo "== dovecot $name: IMAP $2, IMAPS $3, LMTP $4, submission $7, POP3 $8, POP3S $9, ManageSieve ${10} ($5, separator '$6')"
	dovecot -c "$dir/dovecot.conf" </dev/null >>"$dir/dovecot.log" 2>&1 || { tail -n 30 "$dir/dovecot.log" >&2; exit 1; }
	wait_port "$2" "dovecot $name" "$dir/dovecot.log"
	wait_port "$4" "dovecot $name lmtp" "$dir/dovecot.log"
}
# Submission relays to mailshift's inbound SMTP (30025), which delivers to
# example.org users by their mailHost.
start_dovecot old 31143 31993 31024 'maildir:~/Maildir' / 31587 31110 31995 31190
start_dovecot new 31243 32993 31224 'sdbox:~/sdbox' . 32587 31210 32995 31290 'sieve_extensions = -regex'

echo "== sample mail"
python3 "$here/deliver.py" 31024 old 1 40
python3 "$here/deliver.py" 31224 new 41 60

render "$here/mailshift.toml.in" "$LAB_DIR/mailshift.toml" \
	LDAP_URL="$ldap_url" ADMIN_DN="$ADMIN_DN" ADMIN_PASSWORD="$ADMIN_PW" \
	OLD_IMAP_PORT=31143 OLD_LMTP_PORT=31024 NEW_IMAPS_PORT=32993 NEW_LMTP_PORT=31224 \
	CA_FILE="$LAB_DIR/certs/ca.pem" MASTER_USER="$MASTER_USER" MASTER_PASSWORD="$MASTER_PW" \
	TLS_CERT="$LAB_DIR/certs/server.pem" TLS_KEY="$LAB_DIR/certs/server.key" \
	IMAP_PORT=30143 IMAPS_PORT=30993 ADMIN_PORT=30080
# Each store's submission service, for the [submission] front end.
sed -i -e '/^\[backends.old\]$/a submission = "smtp+starttls://127.0.0.1:31587"' \
	-e '/^\[backends.new\]$/a submission = "smtp+starttls://127.0.0.1:32587"' \
	"$LAB_DIR/mailshift.toml"
# ManageSieve on both stores, and mailshift's own listener.
sed -i -e 's|^\[backends.old\]$|&\nsieve = "sieve+starttls://127.0.0.1:31190"|' \
	-e 's|^\[backends.new\]$|&\nsieve = "sieve://127.0.0.1:31290"|' "$LAB_DIR/mailshift.toml"
printf '\n[managesieve]\nlisten = "127.0.0.1:30190"\n' >>"$LAB_DIR/mailshift.toml"
# Inbound SMTP and migration, so the whole flow can be tried in the lab
# (set LAB_EXTRA_TOML to replace this block).
if [ -z "${LAB_EXTRA_TOML+set}" ]; then
	LAB_EXTRA_TOML="[smtp]
listen = \"127.0.0.1:30025\"
domains = [\"example.org\"]

[submission]
listen = \"127.0.0.1:30587\"
listen_tls = \"127.0.0.1:30465\"

[migration]
from = \"old\"
to = \"new\"
state_dir = \"$LAB_DIR/state\"
instance_id = \"lab\""
fi
# POP3: each store's POP3 and mailshift's own listeners (110/995 shifted).
# Added here rather than in the template, which the Cyrus lab renders too.
sed -i -e '/^\[backends.old\]$/a pop3 = "pop3+starttls://127.0.0.1:31110"' \
	-e '/^\[backends.new\]$/a pop3 = "pop3s://127.0.0.1:32995"' "$LAB_DIR/mailshift.toml"
printf '\n[pop3]\nlisten = "127.0.0.1:30110"\nlisten_tls = "127.0.0.1:30995"\n' >>"$LAB_DIR/mailshift.toml"
if [ -n "${LAB_EXTRA_TOML:-}" ]; then
	printf '\n%s\n' "$LAB_EXTRA_TOML" >>"$LAB_DIR/mailshift.toml"
fi

cat <<INFO
== lab is up in $LAB_DIR
   LDAP   $ldap_url  ($ADMIN_DN / $ADMIN_PW)
   old    imap://127.0.0.1:31143  imaps://127.0.0.1:31993  lmtp://127.0.0.1:31024  submission 31587  pop3://127.0.0.1:31110  pop3s://127.0.0.1:31995
   new    imap://127.0.0.1:31243  imaps://127.0.0.1:32993  lmtp://127.0.0.1:31224  submission 32587  pop3://127.0.0.1:31210  pop3s://127.0.0.1:32995
   mailshift submission 127.0.0.1:30587 (STARTTLS), 30465 (TLS)
   proxy  imap 30143, imaps 30993, pop3 30110 (STLS), pop3s 30995
   sieve  old sieve://127.0.0.1:31190  new sieve://127.0.0.1:31290  mailshift 127.0.0.1:30190
   users  user0001..user0060 / pw0001..pw0060, master $MASTER_USER / $MASTER_PW
   CA     $LAB_DIR/certs/ca.pem
   config $LAB_DIR/mailshift.toml
   stop   $here/down.sh
INFO

if [ "$serve" = yes ]; then
	cd "$repo"
	echo "== mailshift serve (Ctrl-C stops mailshift; the lab keeps running)"
	exec cargo run --release -- serve --config "$LAB_DIR/mailshift.toml"
fi
