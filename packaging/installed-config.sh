#!/bin/sh
# Writes to stdout the configuration that the packages install as /etc/rocsync/config.toml:
# config.example.toml (or the file given) with the service's paths and a header that says what
# the installed file does. Fails if a path of the example's working-directory layout is left.
#
#   packaging/installed-config.sh [config.example.toml] > config.toml
set -eu
example="${1:-$(dirname "$0")/../config.example.toml}"
out=$(
    cat <<'HEADER'
# rocsync configuration, installed by the rocsync package from config.example.toml (which is
# also in /usr/share/doc/rocsync/examples/). As installed, it reads the bundled sample answer
# (/usr/share/rocsync/annuaire-urls.sample.json) until [annuaire] url points at the web service.
# It writes its exports under /var/lib/rocsync/exports/ (mode 0644: Squid, HAProxy and the
# firewalls read them) and its state under /var/lib/rocsync/state/ (the user rocsync's only);
# notifications delivered to the user rocsync's ~/Maildir/ are in /var/lib/rocsync/Maildir.
# Relative paths are resolved against /etc/rocsync.
#
HEADER
    # The example's title and first paragraph describe the example; the header above replaces
    # them (line 1, then from line 2 to the next lone `#`).
    sed -e '1d' -e '2,/^#$/d' \
        -e 's|^url = "file:samples/annuaire-urls.json"|url = "file:/usr/share/rocsync/annuaire-urls.sample.json"|' \
        -e 's|^path = "rocsync-out/|path = "/var/lib/rocsync/exports/|' \
        -e 's|^state_dir = "rocsync-state"|state_dir = "/var/lib/rocsync/state"|' \
        "$example"
)
if printf '%s\n' "$out" | grep -n -e 'rocsync-out' -e 'rocsync-state' -e 'samples/' >&2; then
    echo "installed-config.sh: the lines above still speak of the example's layout" >&2
    exit 1
fi
printf '%s\n' "$out" | grep -q '^state_dir = "/var/lib/rocsync/state"$'
printf '%s\n' "$out"
