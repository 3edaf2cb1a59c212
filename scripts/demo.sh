#!/usr/bin/env bash
# The demo lab: a director pair (lb1 priority 150, lb2 priority 100) and a
# client on one LAN, each in its own network namespace, with the LAN's
# bridge in a "switch" namespace, so nothing is added to the host's own.
# It shows the election, the client reaching the VIP, a graceful handover
# (SIGTERM) and a crash takeover (SIGKILL), then removes everything.
#
# The IPVS part of the lab (DR and NAT services to real servers) arrives
# with the IPVS work; it will run in the VM where the host kernel has no IPVS.
set -euo pipefail

bin=${1:-bin/directord}
[ -x "$bin" ] || { echo "demo: $bin not built (make build)"; exit 1; }
[ "$(id -u)" -eq 0 ] || { echo "demo: needs root for network namespaces"; exit 1; }

p="ddemo$$"
work=$(mktemp -d -t directord-demo.XXXXXX)
pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
	for ns in "$p-lb1" "$p-lb2" "$p-client" "$p-sw"; do ip netns del "$ns" 2>/dev/null || true; done
	rm -rf "$work"
}
trap cleanup EXIT

say() { printf '\n== %s\n' "$*"; }
on() { local ns=$1; shift; ip netns exec "$p-$ns" "$@"; }

say "lab: switch namespace with a bridge; lb1, lb2 and client on it (192.0.2.0/24)"
ip netns add "$p-sw"
ip -n "$p-sw" link add br0 type bridge
ip -n "$p-sw" link set br0 up
i=0
for h in lb1 lb2 client; do
	i=$((i + 1))
	ip netns add "$p-$h"
	ip -n "$p-sw" link add "$h" type veth peer name eth0 netns "$p-$h"
	ip -n "$p-sw" link set "$h" master br0 up
	ip -n "$p-$h" link set lo up
	ip -n "$p-$h" link set eth0 up
done
ip -n "$p-lb1" addr add 192.0.2.11/24 dev eth0
ip -n "$p-lb2" addr add 192.0.2.12/24 dev eth0
ip -n "$p-client" addr add 192.0.2.100/24 dev eth0

config() { # name priority
	mkdir -p "$work/$1"
	cat >"$work/$1/directord.yaml" <<EOF
node:
  name: $1
  state_dir: $work/$1/state
  control_socket: $work/$1/state/ctl.sock
  log: {level: info, format: text}
vrrp:
  instances:
    - name: VI_WEB
      interface: eth0
      vrid: 51
      priority: $2
      advert_interval: 100ms
      virtual_addresses: [192.0.2.50]
      garp: {repeat: 3, interval: 10ms, master_delay: 1s}
EOF
}
start() { # name
	ip netns exec "$p-$1" "$bin" -c "$work/$1/directord.yaml" >>"$work/$1/log" 2>&1 &
	pids+=($!)
	eval "pid_$1=$!"
	disown
}
states() {
	for h in lb1 lb2; do
		local last pid
		last=$(grep 'VRRP transition' "$work/$h/log" | tail -n 1 | sed -E 's/.* to=([A-Z]+).*/\1/')
		eval "pid=\$pid_$h"
		kill -0 "$pid" 2>/dev/null || last="stopped"
		local vip="no VIP"
		on "$h" ip -o addr show dev eth0 | grep -q ' 192.0.2.50/32 ' && vip="holds 192.0.2.50"
		printf '   %-4s %-7s %s\n' "$h" "${last:-?}" "$vip"
	done
}
wait_state() { # name state
	for _ in $(seq 1 100); do
		grep 'VRRP transition' "$work/$1/log" | tail -n 1 | grep -q "to=$2" && return 0
		sleep 0.05
	done
	echo "demo: $1 did not become $2"; cat "$work/$1/log"; exit 1
}
client_reaches() {
	local mac
	on client ping -c 1 -W 1 192.0.2.50 >/dev/null
	mac=$(on client ip neigh show 192.0.2.50 | sed -E 's/.*lladdr ([0-9a-f:]+).*/\1/')
	for h in lb1 lb2; do
		if [ "$(on "$h" cat /sys/class/net/eth0/address)" = "$mac" ]; then
			echo "   client pings 192.0.2.50: answered by $h ($mac)"
		fi
	done
}
took() { # name: time of the last transition to MASTER, in ms since the epoch
	grep 'to=MASTER' "$work/$1/log" | tail -n 1 | sed -E 's/^time=([^ ]+).*/\1/' | xargs -I{} date -d {} +%s%3N
}

say "start directord on lb1 (priority 150) and lb2 (priority 100), VRRPv3 every 100ms"
config lb1 150
config lb2 100
start lb1
start lb2
wait_state lb1 MASTER
wait_state lb2 BACKUP
states
client_reaches

say "drill 1: SIGTERM lb1 (priority-0 advert, then release): lb2 takes over after Skew_Time"
t0=$(date +%s%3N)
kill -TERM "$pid_lb1"
wait_state lb2 MASTER
echo "   lb2 MASTER $(( $(took lb2) - t0 )) ms after SIGTERM (Skew_Time for priority 100 at 100ms: 61 ms)"
states
client_reaches

say "lb1 returns and preempts"
start lb1
wait_state lb1 MASTER
wait_state lb2 BACKUP
states
client_reaches

say "drill 2: SIGKILL lb1 and cut its link (a dead host): lb2 takes over after Master_Down_Interval"
t0=$(date +%s%3N)
kill -KILL "$pid_lb1"
ip -n "$p-sw" link set lb1 down
wait_state lb2 MASTER
echo "   lb2 MASTER $(( $(took lb2) - t0 )) ms after the kill (Master_Down_Interval: 361 ms)"
states
echo "   (the killed lb1 left its VIP bound, behind a cut link; its next start removes it first)"
client_reaches

say "timeline (lb2)"
grep -E 'VRRP transition|VIP bound|VIP released' "$work/lb2/log" | sed -E 's/^time=[^T]+T([^ ]+) level=[A-Z]+ msg=/   \1 /'

say "done: cleaning up the lab"
