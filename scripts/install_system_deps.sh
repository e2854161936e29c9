#!/usr/bin/env bash
# The system parts the tests need that pip cannot install: Java and the Pub/Sub emulator (the
# emulator-stack tests) and Chromium (the managers' page test). Called by `make test` and .ci/run.
#
# Run as root, it installs what is missing (Debian/Ubuntu: apt-get, and Google's apt repository
# for the emulator). Otherwise it names what is missing and the command that installs it. Either
# way it exits 0: the tests that need a missing part fail under CI=true and name it (locally they
# skip), so the other tests still run.
set -uo pipefail

java_present() { command -v java >/dev/null; }

emulator_present() {
  command -v gcloud >/dev/null || return 1
  local root
  # The SDK root is gcloud's bin/..; asking `gcloud info` (slow to start) only when that misses.
  root="$(dirname "$(dirname "$(readlink -f "$(command -v gcloud)")")")"
  [ -x "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ] && return 0
  root="$(gcloud info --format='value(installation.sdk_root)' 2>/dev/null)" || return 1
  [ -x "$root/platform/pubsub-emulator/bin/cloud-pubsub-emulator" ]
}

chromium_present() { command -v chromium >/dev/null || [ -x /usr/bin/chromium ]; }

install_java() {
  apt-get update -qq && apt-get install -y -qq default-jre-headless
}

install_pubsub_emulator() {
  apt-get update -qq && apt-get install -y -qq curl gnupg ca-certificates
  curl -fsSL https://packages.cloud.google.com/apt/doc/apt-key.gpg \
    | gpg --batch --yes --dearmor -o /usr/share/keyrings/cloud.google.gpg
  echo "deb [signed-by=/usr/share/keyrings/cloud.google.gpg] https://packages.cloud.google.com/apt cloud-sdk main" \
    > /etc/apt/sources.list.d/google-cloud-sdk.list
  apt-get update -qq && apt-get install -y -qq google-cloud-cli google-cloud-cli-pubsub-emulator
}

install_chromium() {
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}

# part | check | installer | how to install it by hand
PARTS=(
  "Java|java_present|install_java|sudo apt-get install -y default-jre-headless"
  "the Pub/Sub emulator|emulator_present|install_pubsub_emulator|sudo $0 (adds Google's apt repository, installs google-cloud-cli-pubsub-emulator)"
  "Chromium|chromium_present|install_chromium|sudo apt-get install -y chromium"
)

missing=0
for part in "${PARTS[@]}"; do
  IFS='|' read -r name check installer hint <<<"$part"
  "$check" && continue
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing $name (the tests need it)" >&2
    if "$installer" && "$check"; then continue; fi
    echo "warning: could not install $name" >&2
  fi
  echo "missing: $name; install it with: $hint" >&2
  missing=$((missing + 1))
done
if [ "$missing" -gt 0 ]; then
  echo "$missing system part(s) missing: the tests that need them fail under CI=true, skip otherwise" >&2
fi
exit 0
