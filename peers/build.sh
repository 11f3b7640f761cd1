#!/usr/bin/env bash
# Builds the real peers that `make test-real` and benches/bench_vs_upstream.py run
# against: kube-apiserver, kube-controller-manager and kubectl (k8s.io/kubernetes),
# etcd, upstream metrics-server and helm, each from the small Go module beside this
# script that pins its version (go.mod + go.sum are the source of truth).
#
# Builds are reproducible (-trimpath, no VCS stamping, CGO off, fixed version
# ldflags, go.sum-verified sources) and cached once per machine, outside the
# checkout, so a clean clone on a machine that built them before only relinks
# peers/bin/:
#   ${KUBEMETRICS_PEERS_DIR:-$HOME/.cache/kubemetrics/peers}/<component>-<key>/
# where <key> hashes everything that decides the output (Go version, flags, the
# module's files). Go's own module and build caches ($GOMODCACHE, $GOCACHE) make
# a changed key cheap when the sources did not change.
#
# peers/bin/ (ignored by git) holds one symlink per binary into that cache, and
# peers/bin/VERSIONS says what each is. A component that fails to fetch or build
# is named with its error; the others are still built, and the script exits 1.
# `build.sh NAME...` builds (and links) only the named components.
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
BIN="$HERE/bin"
ROOT="${KUBEMETRICS_PEERS_DIR:-${HOME}/.cache/kubemetrics/peers}"

# Every module pins `go 1.26.0`: the machine's own Go builds them, and a module
# that asked for a newer Go should fail here rather than fetch a toolchain.
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"
export CGO_ENABLED=0
export GOFLAGS="-mod=readonly -trimpath -buildvcs=false"
# Kept by version so a change of build recipe gets new cache entries.
RECIPE=1

command -v go >/dev/null || { echo "peers: go is not installed (need Go >= 1.26)" >&2; exit 1; }
GOVERSION="$(go env GOVERSION)"

k8s_version_ldflags() { # $1 = vX.Y.Z: what hack/lib/version.sh stamps into a release
	local v="$1" major minor rest p out=""
	major="${v#v}"; major="${major%%.*}"
	rest="${v#v*.}"; minor="${rest%%.*}"
	for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
		out+=" -X $p.gitVersion=$v -X $p.gitMajor=$major -X $p.gitMinor=$minor"
		out+=" -X $p.gitTreeState=clean -X $p.buildDate=1970-01-01T00:00:00Z"
	done
	printf '%s' "$out"
}

# name | module dir | packages | ldflags | version (for VERSIONS)
K8S=v1.37.2
COMPONENTS=(
	"kubernetes|kubernetes|k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kubectl|-s -w$(k8s_version_ldflags $K8S)|k8s.io/kubernetes $K8S"
	"etcd|etcd|.|-s -w|go.etcd.io/etcd/server/v3 v3.7.3"
	"metrics-server|metrics-server|sigs.k8s.io/metrics-server/cmd/metrics-server|-s -w -X k8s.io/client-go/pkg/version.gitVersion=v0.8.0 -X k8s.io/client-go/pkg/version.buildDate=1970-01-01T00:00:00Z|sigs.k8s.io/metrics-server v0.8.0"
	"helm|helm|helm.sh/helm/v4/cmd/helm|-s -w -X helm.sh/helm/v4/internal/version.version=v4.3.2 -X helm.sh/helm/v4/internal/version.gitTreeState=clean|helm.sh/helm/v4 v4.3.2"
)

key_of() { # $1 module dir, $2 packages, $3 ldflags
	{
		echo "recipe=$RECIPE go=$GOVERSION $(go env GOOS GOARCH | tr '\n' ' ')"
		echo "CGO_ENABLED=$CGO_ENABLED GOFLAGS=$GOFLAGS"
		echo "packages=$2"
		echo "ldflags=$3"
		(cd "$HERE/$1" && find . -maxdepth 1 -type f \( -name 'go.mod' -o -name 'go.sum' -o -name '*.go' \) | LC_ALL=C sort | xargs sha256sum)
	} | sha256sum | cut -c1-16
}

mkdir -p "$ROOT"
# One build at a time per machine: worktrees and CI share the cache.
exec 9>"$ROOT/.lock"
flock 9

if (($# == 0)); then rm -rf "$BIN"; fi
mkdir -p "$BIN"
failed=()
touch "$BIN/VERSIONS"
for spec in "${COMPONENTS[@]}"; do
	IFS='|' read -r name dir pkgs ldflags version <<<"$spec"
	if (($#)) && [[ " $* " != *" $name "* ]]; then continue; fi
	key="$(key_of "$dir" "$pkgs" "$ldflags")"
	out="$ROOT/$name-$key"
	if [[ -f "$out/.complete" ]]; then
		echo "peers: $name ($version) cached in $out"
	else
		echo "peers: building $name ($version) with $GOVERSION into $out ..."
		tmp="$ROOT/.tmp-$name-$key"
		rm -rf "$tmp"
		mkdir -p "$tmp"
		log="$ROOT/$name-$key.log"
		start=$SECONDS
		# shellcheck disable=SC2086 # pkgs is a word list
		if (cd "$HERE/$dir" && go build -ldflags "$ldflags" -o "$tmp/" $pkgs) >"$log" 2>&1; then
			(cd "$tmp" && sha256sum -- * >.sha256)
			touch "$tmp/.complete"
			rm -rf "$out"
			mv "$tmp" "$out"
			echo "peers: built $name in $((SECONDS - start)) s"
		else
			echo "peers: FAILED to build $name ($version); the end of $log:" >&2
			tail -n 20 "$log" >&2
			rm -rf "$tmp"
			failed+=("$name")
			continue
		fi
	fi
	for f in "$out"/*; do
		b="$(basename "$f")"
		ln -sfn "$f" "$BIN/$b"
		sed -i "/^$b /d" "$BIN/VERSIONS"
		echo "$b $version $GOVERSION sha256:$(grep " $b\$" "$out/.sha256" | cut -c1-16)" >>"$BIN/VERSIONS"
	done
done

if ((${#failed[@]})); then
	echo "peers: not built: ${failed[*]}" >&2
	exit 1
fi
echo "peers: ready in $BIN:"
cat "$BIN/VERSIONS"
