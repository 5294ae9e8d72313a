#!/usr/bin/env bash
# Offline stand-ins for what the container build pulls, for a machine that reaches Debian's
# mirror and PyPI but no image registry (this project's CI):
#   - $PYTHON_IMAGE: Debian's python3.11 in a debootstrap root (for the Dockerfile's PYTHON_IMAGE)
#   - $LB_IMAGE: Debian's HAProxy 2.6, laid out like the official haproxy image (compose's LB_IMAGE)
#   - wheels/: every pinned requirement as a wheel, made with the host's pip
# Each one is skipped when it already exists. Then, with no registry:
#   DOCKER_BUILDKIT=0 docker build --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" --build-arg PIP_NO_INDEX=1 .
# Needs root, docker, debootstrap and python3 with pip. The Debian mirror is the one apt uses here.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON_IMAGE=${PYTHON_IMAGE:-batch-predict/python:3.11-debian}
LB_IMAGE=${LB_IMAGE:-batch-predict/haproxy:2.6-debian}
cache=$(realpath -m "${OFFLINE_CACHE_DIR:-.run/offline}")
codename=$(. /etc/os-release && echo "$VERSION_CODENAME")
mkdir -p "$cache/debs"

# The first mirror apt reads the release itself (not -security or -updates) from, deb822 or one-line.
debian_mirror() {
    local uri
    uri=$(awk -v c="$codename" '
        /^URIs:/ { uris = $2 }
        /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == c && uris != "") { print uris; exit } }
        /^[[:space:]]*$/ { uris = "" }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
    [[ -n $uri ]] || uri=$(sed -E 's/\[[^]]*\]//' /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null |
        awk -v c="$codename" '$1 == "deb" && $3 == c { print $2; exit }')
    [[ -n $uri ]] || { echo "offline_images: no $codename mirror in apt's sources" >&2; exit 1; }
    echo "$uri"
}

# image_from_debootstrap TAG PACKAGES DOCKER_CHANGE...: a minbase root with PACKAGES, imported as TAG.
image_from_debootstrap() {
    local tag=$1 packages=$2 root
    shift 2
    if docker image inspect "$tag" >/dev/null 2>&1; then
        echo "[offline] $tag exists"
        return
    fi
    echo "[offline] building $tag (debootstrap $codename: $packages)"
    root=$(mktemp -d "$cache/root.XXXXXX")
    debootstrap --variant=minbase --include="$packages" --cache-dir="$cache/debs" \
        "$codename" "$root" "$(debian_mirror)" >"$cache/debootstrap-${tag//[\/:]/_}.log" 2>&1 ||
        { tail -20 "$cache/debootstrap-${tag//[\/:]/_}.log" >&2; rm -rf "$root"; return 1; }
    # What an image needs no copy of: package lists, caches, docs, manuals, translations.
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/* "$root"/usr/share/{doc,man,info,locale}/*
    tar -C "$root" -c . | docker import "$@" - "$tag" >/dev/null
    rm -rf "$root"
    echo "[offline] $tag: $(docker image inspect -f '{{.Size}}' "$tag" | numfmt --to=iec)"
}

# Like python:3.11-slim for the Dockerfile: `python` on PATH, venv with its bundled pip
# (python3-distutils named because debootstrap does not resolve the virtual package).
image_from_debootstrap "$PYTHON_IMAGE" python3.11,python3.11-venv,python3-distutils,python-is-python3,ca-certificates \
    --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["python3"]'

# Like the official haproxy image: config in /usr/local/etc/haproxy, not root, master-worker in
# the foreground (compose sets stop_signal SIGUSR1, the graceful stop, for both images).
image_from_debootstrap "$LB_IMAGE" haproxy \
    --change 'USER haproxy' \
    --change 'WORKDIR /var/lib/haproxy' \
    --change 'CMD ["haproxy", "-W", "-db", "-f", "/usr/local/etc/haproxy/haproxy.cfg"]'

# The wheelhouse: one stamp per content of the requirements files, so a changed pin re-runs it.
stamp=wheels/.built-$(cat requirements*.txt | sha256sum | cut -c1-16)
if [[ -f $stamp ]]; then
    echo "[offline] wheels/ is up to date"
else
    echo "[offline] building wheels/ from requirements-train.txt with the host's pip"
    rm -f wheels/*.whl wheels/.built-*
    python3 -m pip wheel --quiet --disable-pip-version-check --wheel-dir wheels -r requirements-train.txt \
        >"$cache/pip-wheel.log" 2>&1 || { tail -20 "$cache/pip-wheel.log" >&2; exit 1; }
    touch "$stamp"
    echo "[offline] wheels/: $(find wheels -name '*.whl' | wc -l) wheels, $(du -sh wheels | cut -f1)"
fi
