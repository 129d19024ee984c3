# Sourced by scripts that install what they drive when it is missing: one way to do it.
# Scripts that source it run from the project root.

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

# The project's own Python environment: `.venv` at the project root (ignored by git). The
# Python packages the tests and checks drive go there, never into the machine's interpreter.
VENV="$PWD/.venv"

# need_venv: creates .venv when missing and puts .venv/bin first on PATH, so that `python3`,
# `pip` and the tools installed there resolve to it (the Makefile does the same for the tests).
need_venv() {
    if [ ! -x "$VENV/bin/python3" ] || [ ! -x "$VENV/bin/pip" ]; then
        echo "creating the project's Python environment (.venv)"
        if ! python3 -m venv --clear "$VENV" >/dev/null 2>&1; then
            # Debian's python3 makes environments only with its python3-venv package.
            need_debian false python3-venv
            python3 -m venv --clear "$VENV" \
                || { echo "cannot create .venv: install Python's venv module (Debian: python3-venv)" >&2; exit 1; }
        fi
    fi
    case ":$PATH:" in
        *":$VENV/bin:"*) ;;
        *) export PATH="$VENV/bin:$PATH" ;;
    esac
}

# need_pip CHECK PIP-ARGS...: pip-installs into .venv unless CHECK (a command, run with .venv/bin
# first on PATH) passes, then checks again. CHECK should look in .venv itself (`.venv/bin/tool`,
# `python3 -c 'import ...'`), not merely find a copy installed elsewhere.
need_pip() {
    local check=$1
    shift
    need_venv
    eval "$check" >/dev/null 2>&1 && return 0
    echo "installing $* (PyPI, into .venv)"
    "$VENV/bin/python3" -m pip install -q --disable-pip-version-check "$@" 2>&1 | grep -v '^WARNING' || true
    eval "$check" >/dev/null 2>&1 || { echo "cannot install $* from PyPI into .venv" >&2; exit 1; }
}
