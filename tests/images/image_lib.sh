# Shared by the image build scripts (tests/images/build_test_image.sh,
# bench/images/build_torch_image.sh): source it. Needs root, debootstrap and umoci.

PATH_ENV="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

log() { echo "$(basename "$0"): $*" >&2; }

# The Debian mirror apt is configured with (the first one serving bookworm), else Debian's;
# $GANTRY_DEBIAN_MIRROR wins.
mirror() {
  if [ -n "${GANTRY_DEBIAN_MIRROR:-}" ]; then
    echo "$GANTRY_DEBIAN_MIRROR"
    return
  fi
  local m
  # shellcheck disable=SC2016  # apt-get's own $(FIELD) syntax
  m="$(apt-get indextargets --format '$(REPO_URI) $(CODENAME) $(TARGET_OF)' 2>/dev/null |
    awk '$2 == "bookworm" && $3 == "deb" { print $1; exit }')"
  echo "${m:-http://deb.debian.org/debian/}"
}

# debootstrap_rootfs DIR PACKAGES: Debian bookworm minbase with PACKAGES (comma-separated) in
# DIR, without package lists, caches and logs.
debootstrap_rootfs() {
  local dir="$1" include="$2" start=$SECONDS m
  m="$(mirror)"
  log "debootstrap bookworm ($include) from $m into $dir"
  if ! debootstrap --variant=minbase --include="$include" bookworm "$dir" "$m" \
    >"$dir.debootstrap.log" 2>&1; then
    tail -n 30 "$dir.debootstrap.log" >&2
    return 1
  fi
  rm -f "$dir.debootstrap.log"
  rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/log/*.log \
    "$dir"/var/cache/debconf/*-old
  log "debootstrap done in $((SECONDS - start)) s"
}

# cached_image CACHE KEY BUILD: prints CACHE/KEY/oci, first running `BUILD WORKDIR` (which
# leaves an OCI layout in WORKDIR/oci) unless it is there. Concurrent runs are serialised by a
# lock; a build is made aside and renamed into place, so an interrupted one leaves nothing
# behind; images of other keys are removed once this one is built.
cached_image() {
  local cache="$1" key="$2" build="$3" out="$1/$2"
  if [ -f "$out/done" ]; then
    echo "$out/oci"
    return 0
  fi
  for tool in debootstrap umoci; do
    command -v "$tool" >/dev/null || { log "$tool is missing: run scripts/setup.sh"; return 1; }
  done
  [ "$(id -u)" -eq 0 ] || { log "needs root (debootstrap)"; return 1; }
  mkdir -p "$cache"
  exec 9>"$cache/.lock"
  flock 9
  if [ -f "$out/done" ]; then  # built by a concurrent run while this one waited
    echo "$out/oci"
    return 0
  fi
  local work="$cache/.build-$key-$$" start=$SECONDS
  rm -rf "$work"
  mkdir -p "$work"
  # shellcheck disable=SC2064  # expand now: the trap must remove this build's directory
  trap "rm -rf '$work'" EXIT
  "$build" "$work"
  rm -rf "$out"
  mv "$work" "$out"
  trap - EXIT
  touch "$out/done"
  local old
  for old in "$cache"/????????????????; do
    if [ "$old" != "$out" ] && [ -f "$old/done" ]; then rm -rf "$old"; fi
  done
  log "built $out/oci in $((SECONDS - start)) s; $(du -sh "$out/oci" | cut -f1)"
  echo "$out/oci"
}
