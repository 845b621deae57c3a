# Shared bash helpers for the lab scripts (sourced, not run).

# render TEMPLATE OUT NAME=VALUE... — replace every @NAME@ in TEMPLATE.
# The Rust harness (tests/support/mod.rs) renders the same templates the same
# way; an @UPPER_CASE@ left over is an error in both.
render() {
	local tpl=$1 out=$2 script="" kv name value
	shift 2
	for kv in "$@"; do
		name=${kv%%=*}
		value=${kv#*=}
		# Escape sed replacement specials: backslash, the | delimiter, &.
		value=$(printf '%s' "$value" | sed -e 's/[\\|&]/\\&/g')
		script="${script}s|@${name}@|${value}|g;"
	done
	sed -e "$script" "$tpl" > "$out.tmp"
	if grep -q '@[A-Z][A-Z_]*@' "$out.tmp"; then
		echo "render $tpl: unfilled placeholders: $(grep -o '@[A-Z][A-Z_]*@' "$out.tmp" | sort -u | tr '\n' ' ')" >&2
		rm -f "$out.tmp"
		return 1
	fi
	mv "$out.tmp" "$out"
}

# wait_port PORT NAME LOG — until something accepts on 127.0.0.1:PORT.
wait_port() {
	local i=0
	while ! (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; do
		i=$((i + 1))
		if [ "$i" -gt 100 ]; then
			echo "$2 did not come up on port $1; log $3:" >&2
			tail -n 30 "$3" >&2 || true
			return 1
		fi
		sleep 0.1
	done
}

# stop_pidfile FILE — TERM the process named in FILE, wait, then KILL.
stop_pidfile() {
	[ -s "$1" ] || return 0
	local pid i
	pid=$(cat "$1")
	if kill "$pid" 2>/dev/null; then
		i=0
		while kill -0 "$pid" 2>/dev/null && [ "$i" -lt 50 ]; do
			sleep 0.1
			i=$((i + 1))
		done
		kill -9 "$pid" 2>/dev/null || true
	fi
	rm -f "$1"
}
