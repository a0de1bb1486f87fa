#!/usr/bin/env bash
# Builds the C example against the static and the shared library and runs both.
# Usage: examples/c/build.sh   (from anywhere; builds the library in release first)
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
cargo build --release --lib
lib="$root/target/release"
out="$root/target/c-example"
mkdir -p "$out"
cc=${CC:-cc}
"$cc" -O2 -Wall -Wextra -std=c11 -I include examples/c/main.c "$lib/libflashkern.a" \
    -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o "$out/example_static"
"$cc" -O2 -Wall -Wextra -std=c11 -I include examples/c/main.c -L "$lib" -lflashkern -lm \
    -Wl,-rpath,"$lib" -o "$out/example_shared"
echo "== static library"; "$out/example_static"
echo "== shared library"; "$out/example_shared"
