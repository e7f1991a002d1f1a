#!/bin/sh
# Builds the packages: target/debian/rocsync_VERSION_ARCH.deb (cargo-deb), and with --rpm also
# target/generate-rpm/rocsync-VERSION.ARCH.rpm (cargo-generate-rpm). The man page and the
# shell completions are generated from the binary just built; /etc/rocsync/config.toml is
# config.example.toml with its paths pointed at /var/lib/rocsync and /usr/share/rocsync.
#
#   cargo install cargo-deb cargo-generate-rpm   # once
#   packaging/build.sh [--rpm]
set -eu
cd "$(dirname "$0")/.."
# The packages drive nftables themselves: the netlink feature (libnftnl, libmnl) is on.
cargo build --release --locked --features netlink
bin="${CARGO_TARGET_DIR:-target}/release/rocsync"
# cargo-deb maps target/release/ to CARGO_TARGET_DIR; the generated assets stay in target/assets.
assets=target/assets
rm -rf "$assets"
mkdir -p "$assets/completions"
"$bin" man > "$assets/rocsync.1"
gzip -9n "$assets/rocsync.1"
"$bin" completions bash > "$assets/completions/rocsync.bash"
"$bin" completions zsh > "$assets/completions/_rocsync"
"$bin" completions fish > "$assets/completions/rocsync.fish"
sed -e 's|^url = "file:samples/annuaire-urls.json"|url = "file:/usr/share/rocsync/annuaire-urls.sample.json"|' \
    -e 's|^path = "rocsync-out/|path = "/var/lib/rocsync/exports/|' \
    -e 's|^state_dir = "rocsync-state"|state_dir = "/var/lib/rocsync/state"|' \
    -e '1i # Installed by the rocsync package from config.example.toml: it reads the bundled sample\n# answer until [annuaire] url points at the web service.' \
    config.example.toml > "$assets/config.toml"
grep -q '^state_dir = "/var/lib/rocsync/state"' "$assets/config.toml"
cargo deb --no-build --locked
if [ "${1:-}" = --rpm ]; then
    cargo generate-rpm
fi
