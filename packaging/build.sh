#!/bin/sh
# Builds the packages: target/debian/rocsync_VERSION_ARCH.deb (cargo-deb), and with --rpm also
# target/generate-rpm/rocsync-VERSION.ARCH.rpm (cargo-generate-rpm). The man page and the
# shell completions are generated from the binary just built; /etc/rocsync/config.toml is
# config.example.toml with its paths pointed at /var/lib/rocsync and /usr/share/rocsync
# (packaging/installed-config.sh). Every unit goes to /usr/lib/systemd/system.
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
packaging/installed-config.sh config.example.toml > "$assets/config.toml"
cargo deb --no-build --locked
if [ "${1:-}" = --rpm ]; then
    cargo generate-rpm
fi
