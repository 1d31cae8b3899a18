#!/usr/bin/env bash
# Rebuild the offline vLLM payload for the device machine (x86_64, CPython 3.12, CUDA 13):
# the exact wheels pinned in vllm-requirements.txt, checked, listed and cut into <=48 MiB parts
# (a device call carries the checkout too, and the whole must stay under 64 MiB).
# Idempotent: wheels already there are kept, stale ones removed, manifest and parts remade.
# Install there (after `cat part-* > payload.tar && sha256sum -c payload.sha256 && tar xf payload.tar`):
#   python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/site wheels/*.whl
#   export PYTHONPATH=/tmp/site:/tmp/site/nvidia_cutlass_dsl/dsl_packages
# (the second entry stands in for nvidia_cutlass_dsl_packages.pth, which PYTHONPATH does not run).
set -euo pipefail
cd "$(dirname "$0")/../.."
REQ=scripts/device/vllm-requirements.txt
OUT=.device/vllm
WHEELS=$OUT/wheels
mkdir -p "$WHEELS"

# 1. Download, no deps, binary only, from PyPI alone: this machine's pip settings (local mirrors,
#    find-links, constraints) must not leak in. manylinux tags stop at glibc 2.35.
unset PIP_FIND_LINKS PIP_INDEX_URL PIP_EXTRA_INDEX_URL PIP_CONSTRAINT PIP_NO_INDEX
export PIP_CONFIG_FILE=/dev/null
plat=(--platform manylinux2014_x86_64 --platform manylinux2010_x86_64 --platform manylinux1_x86_64)
for n in 5 12 17 24 26 27 28 31 34 35; do plat+=(--platform "manylinux_2_${n}_x86_64"); done
python3 -m pip download -q --no-deps --only-binary=:all: --index-url https://pypi.org/simple \
  --python-version 3.12 --implementation cp "${plat[@]}" -d "$WHEELS" -r "$REQ"

# Drop wheels of versions no longer pinned (left by an earlier run).
pinned=$(grep -Ev '^\s*(#|$)' "$REQ" | sed 's/ *#.*//; s/[-_.]\+/_/g' | tr 'A-Z' 'a-z')
for w in "$WHEELS"/*.whl; do
  key=$(basename "$w" | cut -d- -f1,2 | sed 's/-/==/; s/[-_.]\+/_/g' | tr 'A-Z' 'a-z')
  grep -qxF "$key" <<<"$pinned" || { echo "removing stale $(basename "$w")"; rm -f "$w"; }
done

# 2. Check: one wheel per pin, nothing that shadows the machine's torch/triton/numpy/CUDA
#    libraries, and every Requires-Dist (markers for Linux x86_64 CPython 3.12, extras
#    followed) met by the payload or by the 'preinstalled:' lines of the requirements file.
python3 - "$REQ" "$WHEELS" <<'PY'
import re, sys, zipfile, pathlib
try:
    from packaging.requirements import Requirement
    from packaging.version import Version
except ImportError:  # pip always carries a copy
    from pip._vendor.packaging.requirements import Requirement
    from pip._vendor.packaging.version import Version

req_file, wheel_dir = sys.argv[1], pathlib.Path(sys.argv[2])
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
pins, pre = {}, {}
for line in open(req_file):
    if m := re.match(r"#\s*preinstalled:\s*([\w.-]+)(?:==(\S+))?", line):
        pre[norm(m[1])] = m[2]
    elif line := line.split("#")[0].strip():
        name, ver = line.split("==")
        pins[norm(name)] = ver

found, bad, warn, unknown = {}, [], set(), set()
for w in sorted(wheel_dir.glob("*.whl")):
    found.setdefault(norm(w.name.split("-")[0]), []).append(w)
for n, ws in found.items():
    if len(ws) > 1 or n not in pins or Version(ws[0].name.split("-")[1]) != Version(pins[n]):
        bad.append(f"unexpected wheel(s) for {n}: {[w.name for w in ws]}")
bad += [f"no wheel for {n}=={v}" for n, v in pins.items() if n not in found]
shadow = re.compile(r"(torch|torchaudio|torchvision|triton|numpy|cuda-toolkit|cuda-bindings|nvidia-(cublas"
                    r"|cuda-runtime|cuda-nvrtc|cuda-cupti|cudnn-cu\d+|cufft|cufile|curand|cusolver|cusparse"
                    r"|cusparselt-cu\d+|nccl-cu\d+|nvjitlink|nvshmem-cu\d+|nvtx))")
bad += [f"{n} would shadow the machine's copy" for n in found if shadow.fullmatch(n) or n in pre]

env = dict(python_version="3.12", python_full_version="3.12.3", sys_platform="linux",
           platform_system="Linux", platform_machine="x86_64", os_name="posix",
           implementation_name="cpython", platform_python_implementation="CPython")
meta = {}
for n, ws in found.items():
    with zipfile.ZipFile(ws[0]) as z:
        text = z.read(next(f for f in z.namelist() if f.endswith(".dist-info/METADATA"))).decode()
    meta[n] = [Requirement(l[15:]) for l in text.splitlines() if l.startswith("Requires-Dist:")]
extras, done = {n: {""} for n in ("vllm", "xgrammar", "gguf")}, set()
while todo := [(n, e) for n, es in extras.items() for e in es if (n, e) not in done]:
    for n, e in todo:
        done.add((n, e))
        for r in meta.get(n, []):
            if r.marker and not r.marker.evaluate({**env, "extra": e}):
                continue
            rn = norm(r.name)
            extras.setdefault(rn, {""}).update(r.extras)
            if rn in pins:
                if not r.specifier.contains(pins[rn], prereleases=True):
                    bad.append(f"{n} needs {r}, payload has {pins[rn]}")
            elif rn not in pre:
                bad.append(f"{n} needs {r}: neither in the payload nor preinstalled")
            elif pre[rn] is None and re.search(r"<|==|~=|!=", str(r.specifier)):
                warn.add(f"{n} needs {r.name}{r.specifier}: preinstalled, version not recorded")
            elif pre[rn] and not r.specifier.contains(pre[rn], prereleases=True):
                warn.add(f"{n} needs {r.name}{r.specifier}: preinstalled {pre[rn]} does NOT match")
            elif pre[rn] is None and str(r.specifier):
                unknown.add(rn)
print(*[f"warning: {w}" for w in sorted(warn)], *[f"ERROR: {b}" for b in bad], sep="\n")
print(f"{len(found)} wheels checked: {len(bad)} errors, {len(warn)} warnings; lower bounds only, on"
      f" preinstalled packages of unrecorded version: {' '.join(sorted(unknown))}")
sys.exit(1 if bad else 0)
PY

# 3. Manifest: name, bytes, sha256 of each wheel.
(cd "$WHEELS" && for w in *.whl; do printf '%s %s %s\n' "$w" "$(stat -c %s "$w")" "$(sha256sum "$w" | cut -d' ' -f1)"; done) >"$OUT/manifest.txt"
echo "$(wc -l <"$OUT/manifest.txt") wheels, $(du -cb "$WHEELS"/*.whl | tail -1 | awk '{printf "%.1f MiB", $1/1048576}')"

# 4. One reproducible tar (sorted, fixed owner and mtime), its sha256, then 48 MiB parts.
rm -f "$OUT"/part-??
tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 -C "$OUT" -cf "$OUT/payload.tar" wheels
(cd "$OUT" && sha256sum payload.tar >payload.sha256)
split -b 48m -d -a 2 "$OUT/payload.tar" "$OUT/part-"
rm -f "$OUT/payload.tar"
ls -l "$OUT"/part-??
