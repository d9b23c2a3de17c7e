#!/usr/bin/env bash
# Pack Ray for the GPU machine into .ray/ (git-ignored): its cp312 wheel is 79 MB, over a
# device call's 64 MiB carry. Unpacked, without the Java jars and the dashboard's web client
# (the executor starts Ray with include_dashboard=False), binaries stripped, xz: about 27 MB.
# Plus the wheels Ray needs that the GPU image lacks (jsonschema and its own needs).
#   bash bench/pack_ray.sh [RAY_VERSION]    # default: the version installed here
set -euo pipefail
ver=${1:-$(python3 -c 'import ray; print(ray.__version__)')}
plat=(--only-binary=:all: --python-version 3.12 --implementation cp --platform manylinux_2_28_x86_64
      --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download -q --no-deps "${plat[@]}" -d "$tmp" "ray==$ver"
mkdir -p "$tmp/x" .ray
(cd "$tmp/x" && unzip -q "$tmp"/ray-*.whl && rm -rf ray/jars ray/dashboard/client/build &&
 strip --strip-unneeded ray/_raylet.so ray/core/src/ray/gcs/gcs_server ray/core/src/ray/raylet/raylet)
tar cf - -C "$tmp/x" . | xz -6 -T0 > .ray/ray.tar.xz
python3 -m pip download -q --no-deps "${plat[@]}" -d .ray jsonschema jsonschema-specifications \
  referencing rpds-py
grep -qx "/.ray/" .git/info/exclude 2>/dev/null || echo "/.ray/" >> .git/info/exclude
du -sh .ray
