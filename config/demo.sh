#!/usr/bin/env bash
# The README's main job: attach the example networks of config/examples to throwaway pod
# namespaces with `plexus exec` (embedded manifests store, no cluster), show what they got,
# ping across the cluster network, then DEL everything and show that nothing is left.
# Everything happens inside a private "node" network namespace, so the machine's own
# network is never touched.
set -euo pipefail
here=$(cd "$(dirname "$0")/examples" && pwd)
root=$(cd "$here/../.." && pwd)

if [ -z "${PLEXUS_DEMO_NODE:-}" ]; then
  [ "$(id -u)" = 0 ] || { echo "demo: run as root (it creates network namespaces)" >&2; exit 1; }
  if [ ! -x /usr/lib/cni/bridge ]; then
    apt-get update -qq && apt-get install -y -qq containernetworking-plugins
  fi
  cargo build --release --quiet --manifest-path "$root/Cargo.toml" --bin plexus
  PLEXUS_DEMO_NODE=1 exec unshare --net "$0" "$@"
fi

plexus="$root/target/release/plexus"
work=$(mktemp -d /tmp/plexus-demo.XXXXXX)
pods=(web db)
cleanup() {
  for p in "${pods[@]}"; do ip netns del "demo-$p" 2>/dev/null || true; done
  rm -rf "$work" /run/plexus-demo
}
trap cleanup EXIT

ip link set lo up
# The macvlan networks' master on this throwaway node.
ip link add plexus-ul0 type bridge && ip link set plexus-ul0 up
sed -e "s#\"manifests\": \"[^\"]*\"#\"manifests\": \"$here\"#" \
    -e "s#\"cniDir\": \"[^\"]*\"#\"cniDir\": \"$work/cache\"#" \
    "$here/plexus.conf" > "$work/plexus.conf"

for p in "${pods[@]}"; do
  ip netns add "demo-$p"
  echo "== plexus exec add, pod default/$p"
  "$plexus" exec add --conf "$work/plexus.conf" --netns "demo-$p" --pod "default/$p" --cni-path /usr/lib/cni
  echo "-- interfaces in the pod:"
  ip -n "demo-$p" -br addr show | grep -v '^lo'
  echo
done

db_ip=$(ip -n demo-db -4 -o addr show dev eth0 | awk '{print $4}' | cut -d/ -f1)
echo "== ping from web to db over the cluster network ($db_ip)"
ip netns exec demo-web ping -c 2 -W 2 "$db_ip"
echo

for p in "${pods[@]}"; do
  echo "== plexus exec del, pod default/$p"
  "$plexus" exec del --conf "$work/plexus.conf" --netns "demo-$p" --pod "default/$p" --cni-path /usr/lib/cni
done
left_links=$(for p in "${pods[@]}"; do ip -n "demo-$p" -br link show | grep -v '^lo' || true; done)
left_ips=$(find /run/plexus-demo/ipam -type f -name '*[0-9]' ! -name 'last_reserved_ip*' 2>/dev/null || true)
left_journal=$(ls -A "$work/cache" 2>/dev/null || true)
if [ -z "$left_links$left_ips$left_journal" ]; then
  echo "== nothing left: no pod interface, no IP reservation, no journal entry"
else
  echo "== LEFT BEHIND:"; echo "$left_links"; echo "$left_ips"; echo "$left_journal"; exit 1
fi
