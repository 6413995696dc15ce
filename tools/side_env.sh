# shellcheck shell=bash
# Sourced by tools/monailabel_env.sh and tools/bioimageio_env.sh, after they set VENV: quiet pip, and torch shared
# with another virtualenv instead of a second copy (a CUDA build of torch is about 5 GB in each environment).
#
#   SHARE_TORCH_FROM=.venv bash tools/monailabel_env.sh
#
# SHARE_TORCH_FROM names a virtualenv (the README's .venv, say). When its torch is the release the new environment
# pins, the new environment sees that virtualenv's site-packages after its own (a .pth file), so pip finds torch
# there and installs only the rest. What the new environment needs at another version pip installs into it, where it
# shadows the shared copy; pip never changes anything outside the environment it installs into. When that torch is
# another release, or missing, the new environment gets its own torch, as without SHARE_TORCH_FROM. The shared
# environment must stay: if it goes, the next run of the script finds the check failing and rebuilds.

side_env_pip() {
    # pip's "Location ... is ignored" lines (an extra index folder without that package) are noise here
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --progress-bar off "$@" 2>&1 |
        { grep -v "^WARNING: Location '.*' is ignored" || true; }
}

# the site-packages of SHARE_TORCH_FROM when its torch is release $1 (printed), else nothing
side_env_shared_site() {
    local want="$1" src="${SHARE_TORCH_FROM:-}" have
    [[ -n "$src" ]] || return 0
    have="$("$src/bin/python" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)"
    if [[ "$have" != "$want" ]]; then
        echo "SHARE_TORCH_FROM=$src has torch ${have:-(none)}, not $want: the environment gets its own torch" >&2
        return 0
    fi
    "$src/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))'
}

# make $VENV see the site-packages $1 (from side_env_shared_site) after its own; nothing when $1 is empty
side_env_share() {
    local site="$1" own
    [[ -n "$site" ]] || return 0
    own="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_path("purelib"))')"
    echo "$site" > "$own/cellseg-shared-torch.pth"
    echo "Sharing torch with $site"
}
