# Sourced by scripts that install what they drive when it is missing: one way to do it.

# need_debian CHECK PACKAGE...: installs the Debian packages unless CHECK (a command) passes;
# refreshes the package lists once if the first try fails.
need_debian() {
    local check=$1
    shift
    eval "$check" >/dev/null 2>&1 && return 0
    echo "installing $* (Debian packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -q "$@" >/dev/null \
        || { apt-get update -q >/dev/null && apt-get install -y -q "$@" >/dev/null; } \
        || { echo "cannot install $*: run as root, or install them yourself" >&2; exit 1; }
}

# need_pip CHECK PIP-ARGS...: pip-installs unless CHECK (a command) passes, then checks again.
need_pip() {
    local check=$1
    shift
    eval "$check" >/dev/null 2>&1 && return 0
    echo "installing $* (PyPI)"
    python3 -m pip install -q "$@" 2>&1 | grep -v '^WARNING' || true
    eval "$check" >/dev/null 2>&1 || { echo "cannot install $* from PyPI" >&2; exit 1; }
}
