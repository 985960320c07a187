#!/usr/bin/env bash
# A plugin author's path, from the installed package: `imhost plugin new` in C, C++ and Rust,
# each skeleton built (C and C++ with find_package(imhost) and -Werror, Rust with Cargo against
# the SDK), its own ctest (plugin check + plugin test) passing, and both commands failing where
# they must: a changed model (its default level lowered) and a wrong expected score. The three
# manifests validate against schemas/imhost-manifest-1.schema.json with the jsonschema library.
# Usage: run.sh BUILD_DIR WORK_DIR SOURCE_DIR
set -euo pipefail
build=$1 work=$2 source=$3
rm -rf "$work"
mkdir -p "$work"
cmake --install "$build" --prefix "$work/prefix" >/dev/null
imhost="$work/prefix/bin/imhost"
fail() { echo "plugin-authors: FAIL: $*" >&2; exit 1; }

# pkg-config finds the headers (a build without CMake).
export PKG_CONFIG_PATH="$work/prefix/lib/pkgconfig"
[ "$(pkg-config --modversion imhost-plugin)" = "$("$imhost" --version | awk '{print $2}')" ] ||
  fail "pkg-config imhost-plugin version differs from the command's"
echo '#include "imhost_plugin.h"
int main(void) { return IMHP_ABI_MAJOR == 1 ? 0 : 1; }' > "$work/pc.c"
cc -std=c99 -Wall -Werror $(pkg-config --cflags imhost-plugin) "$work/pc.c" -o "$work/pc" && "$work/pc" ||
  fail "the header from pkg-config --cflags imhost-plugin does not compile"

for lang in c cpp; do
  dir="$work/acme-$lang"
  (cd "$work" && "$imhost" plugin new "acme-$lang" --lang "$lang" >/dev/null)
  flags=CMAKE_C_FLAGS; [ "$lang" = cpp ] && flags=CMAKE_CXX_FLAGS
  cmake -S "$dir" -B "$dir/build" -DCMAKE_PREFIX_PATH="$work/prefix" -D$flags="-Wall -Wextra -Wpedantic -Werror" >/dev/null
  cmake --build "$dir/build" >/dev/null
  ctest --test-dir "$dir/build" --output-on-failure >"$work/ctest-$lang.log" 2>&1 ||
    { cat "$work/ctest-$lang.log"; fail "the $lang skeleton's own tests fail"; }
  grep -q "100% tests passed, 0 tests failed out of 2" "$work/ctest-$lang.log" || fail "$lang: not 2 tests passed"
  echo "plugin-authors: $lang skeleton builds with -Werror and its 2 tests pass"
done

# Rust: against this source tree's SDK, offline with the workspace's lock file (the same crates).
dir="$work/acme-rust"
(cd "$work" && "$imhost" plugin new acme-rust --lang rust --sdk "$source/rust/imhost-plugin-sdk" >/dev/null)
cp "$source/Cargo.lock" "$dir/"
(cd "$dir" && CARGO_TARGET_DIR="$dir/target" cargo build --release --offline --quiet)
(cd "$dir" && "$imhost" plugin check target/release/libacme_rust.so &&
  "$imhost" plugin test target/release/libacme_rust.so --input test/input.nii.gz --expect test/expected) \
  >"$work/rust.log" 2>&1 || { cat "$work/rust.log"; fail "the Rust skeleton's check or test fails"; }
grep -q "the plugin is ready to ship" "$work/rust.log" || fail "rust: plugin check did not pass"
echo "plugin-authors: Rust skeleton builds and passes plugin check and plugin test"

# plugin test must fail on a model that changed: the C model with its default level lowered from
# 300 to 30 HU also labels the 40 HU head.
dir="$work/acme-c"
sed -i 's/"default": 300/"default": 30/' "$dir/manifest.json"
cmake --build "$dir/build" >/dev/null
if "$imhost" plugin test "$dir/build/libacme_c.so" --input "$dir/test/input.nii.gz" --expect "$dir/test/expected" \
  >"$work/changed.log" 2>&1; then
  cat "$work/changed.log"; fail "plugin test passed a changed model"
fi
grep -q "FAIL  mask" "$work/changed.log" || { cat "$work/changed.log"; fail "changed model: no FAIL line for mask"; }
"$imhost" plugin check "$dir/build/libacme_c.so" >/dev/null || fail "plugin check refused a valid changed model"
sed -i 's/"default": 30/"default": 300/' "$dir/manifest.json"
cmake --build "$dir/build" >/dev/null

# ... and on a wrong expected score (1 % off; the default tolerance is 1e-6 relative).
cp -r "$dir/test/expected" "$work/wrong-expected"
python3 - "$work/wrong-expected/result.json" <<'EOF'
import json, sys
path = sys.argv[1]
doc = json.load(open(path))
doc["scores"]["volume_ml"] *= 1.01
json.dump(doc, open(path, "w"))
EOF
if "$imhost" plugin test "$dir/build/libacme_c.so" --input "$dir/test/input.nii.gz" --expect "$work/wrong-expected" \
  >"$work/wrong.log" 2>&1; then
  cat "$work/wrong.log"; fail "plugin test passed a wrong expected score"
fi
grep -q "FAIL  score volume_ml" "$work/wrong.log" || { cat "$work/wrong.log"; fail "wrong score: no FAIL line"; }
echo "plugin-authors: plugin test fails on a changed model and on a wrong expected score"

# The generated manifests against the JSON Schema (the independent validator).
python_dir="$source/.cache/python"
if PYTHONPATH="$python_dir" python3 -c "import jsonschema" 2>/dev/null; then
  PYTHONPATH="$python_dir" python3 - "$source/schemas/imhost-manifest-1.schema.json" \
    "$work/acme-c/manifest.json" "$work/acme-cpp/manifest.json" "$work/acme-rust/manifest.json" <<'EOF'
import json, sys
import jsonschema
schema = json.load(open(sys.argv[1]))
jsonschema.Draft202012Validator.check_schema(schema)
for path in sys.argv[2:]:
    jsonschema.Draft202012Validator(schema).validate(json.load(open(path)))
print(f"plugin-authors: {len(sys.argv) - 2} generated manifests valid against the schema")
EOF
else
  fail "jsonschema is not installed in .cache/python (scripts/setup.sh test installs it)"
fi
