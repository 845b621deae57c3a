#!/bin/sh
# install-deps.sh — install what the mailshift lab and the integration tests
# need (Debian/Ubuntu). Idempotent: apt-get runs only for missing packages, and
# `apt-get update` at most once. The distribution's own slapd and Dovecot are
# never left running: the lab starts private instances on other ports, and the
# system ones would hold 389/143/993/25 and confuse anyone debugging.
set -eu

# gamin: Courier's imapd (unpacked below) watches maildirs through libgamin,
# which starts /usr/libexec/gam_server on demand; without it every Courier
# login stalls for seconds (its test took 13 minutes instead of 35 s).
PACKAGES="slapd ldap-utils dovecot-imapd dovecot-lmtpd dovecot-submissiond dovecot-ldap swaks postfix isync openssl python3 ca-certificates chromium dovecot-pop3d fetchmail dovecot-managesieved dovecot-sieve sieve-connect haproxy offlineimap3 gamin"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done

if [ -n "$missing" ]; then
	if [ "$(id -u)" != 0 ]; then
		echo "install-deps.sh: missing packages:$missing (run as root to install)" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	# Answer slapd's questions up front; the lab never uses this database.
	echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
	# Postfix is only the tests' sending MTA (each test runs its own with
	# `postfix -c DIR`); the system instance gets no configuration at all.
	echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
	# Keep maintainer scripts from starting services (invoke-rc.d honours this).
	policy=/usr/sbin/policy-rc.d
	had_policy=no
	[ -e "$policy" ] && had_policy=yes
	if [ "$had_policy" = no ]; then
		printf '#!/bin/sh\nexit 101\n' > "$policy"
		chmod +x "$policy"
	fi
	trap '[ "$had_policy" = no ] && rm -f "$policy"' EXIT
	apt-get update -qq
	# shellcheck disable=SC2086
	apt-get install -y -qq --no-install-recommends $missing
fi

# If the packages started their services anyway (installed earlier, or an init
# system without policy-rc.d), stop them so they don't occupy 389/143/993/25.
if [ "$(id -u)" = 0 ]; then
	# Only the distribution instances: their pid files live in /run.
	for pidfile in /run/slapd/slapd.pid /run/dovecot/master.pid /var/spool/postfix/pid/master.pid /run/haproxy.pid; do
		if [ -s "$pidfile" ]; then
			kill "$(cat "$pidfile")" 2>/dev/null || true
		fi
	done
	# Mail files in the lab belong to this user; Dovecot refuses uid 0.
	if ! getent passwd mailshiftlab >/dev/null; then
		useradd --system --user-group --no-create-home --home-dir /nonexistent \
			--shell /usr/sbin/nologin mailshiftlab
	fi
fi

# Cyrus IMAP as a second store. Debian's cyrus-imapd conflicts with
# dovecot-imapd (both provide imap-server), so its binaries, and the
# libraries only it needs, are unpacked into a private tree instead; the lab
# and tests/support/cyrus.rs run them with LD_LIBRARY_PATH from there. Runs
# as any user who may write CYRUS_ROOT's parent (apt-get download needs no root).
CYRUS_ROOT=${MAILSHIFT_CYRUS_ROOT:-/var/cache/mailshift-lab/cyrus}
CYRUS_DEBS="cyrus-imapd cyrus-common sasl2-bin libxapian30 libpcre3 libical3"
if [ ! -x "$CYRUS_ROOT/usr/lib/cyrus/bin/master" ]; then
	cache=$(dirname "$CYRUS_ROOT")/debs
	mkdir -p "$cache"
	# shellcheck disable=SC2086
	# Package lists may be missing or stale on a machine that had every
	# other package already: refresh them once and try again.
	(cd "$cache" && apt-get download $CYRUS_DEBS) ||
		{ apt-get update -qq && (cd "$cache" && apt-get download $CYRUS_DEBS); }
	rm -rf "$CYRUS_ROOT.tmp"
	mkdir -p "$CYRUS_ROOT.tmp"
	for deb in "$cache"/*.deb; do
		dpkg -x "$deb" "$CYRUS_ROOT.tmp"
	done
	rm -rf "$CYRUS_ROOT"
	mv "$CYRUS_ROOT.tmp" "$CYRUS_ROOT"
fi

# Courier-IMAP (and its POP3) as an old store, the same way. Its authentication library has
# its config (/etc/courier), module directory (/usr/lib/courier-authlib) and
# socket (/run/courier) compiled in: tests/support/courier.rs runs each
# instance in a mount namespace of its own (`unshare -m`, root) with private
# directories bound over those paths, so it never touches the host's.
COURIER_ROOT=${MAILSHIFT_COURIER_ROOT:-/var/cache/mailshift-lab/courier}
COURIER_DEBS="courier-imap courier-pop courier-base courier-authlib courier-authdaemon courier-authlib-userdb libcourier-unicode4 libgamin0 libidn12 libltdl7 libpcre3"
if [ ! -x "$COURIER_ROOT/usr/bin/imapd" ] || [ ! -x "$COURIER_ROOT/usr/lib/courier/courier/courierpop3d" ]; then
	cache=$(dirname "$COURIER_ROOT")/courier-debs
	mkdir -p "$cache"
	# shellcheck disable=SC2086
	(cd "$cache" && apt-get download $COURIER_DEBS) ||
		{ apt-get update -qq && (cd "$cache" && apt-get download $COURIER_DEBS); }
	rm -rf "$COURIER_ROOT.tmp"
	mkdir -p "$COURIER_ROOT.tmp"
	for deb in "$cache"/*.deb; do
		dpkg -x "$deb" "$COURIER_ROOT.tmp"
	done
	rm -rf "$COURIER_ROOT"
	mv "$COURIER_ROOT.tmp" "$COURIER_ROOT"
fi
